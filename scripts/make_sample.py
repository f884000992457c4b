#!/usr/bin/env python3
"""Writes a small GPT-2-shaped safetensors file (F32 weights, GPT-2 init scale 0.02) with
the Python standard library only, for the demonstration in scripts/run.sh."""
import json
import random
import struct
import sys

C, V, T, L = 128, 512, 64, 2  # n_embd, vocab, positions, layers


def shapes():
    yield "wte.weight", [V, C]
    yield "wpe.weight", [T, C]
    for i in range(L):
        p = f"h.{i}."
        yield p + "ln_1.weight", [C]
        yield p + "ln_1.bias", [C]
        yield p + "attn.c_attn.weight", [C, 3 * C]
        yield p + "attn.c_attn.bias", [3 * C]
        yield p + "attn.c_proj.weight", [C, C]
        yield p + "attn.c_proj.bias", [C]
        yield p + "ln_2.weight", [C]
        yield p + "ln_2.bias", [C]
        yield p + "mlp.c_fc.weight", [C, 4 * C]
        yield p + "mlp.c_fc.bias", [4 * C]
        yield p + "mlp.c_proj.weight", [4 * C, C]
        yield p + "mlp.c_proj.bias", [C]
    yield "ln_f.weight", [C]
    yield "ln_f.bias", [C]


def main(path):
    rng = random.Random(0)
    header, blobs, offset = {}, [], 0
    for name, shape in shapes():
        n = 1
        for d in shape:
            n *= d
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            values = [1.0] * n
        elif name.endswith(".bias"):
            values = [0.0] * n
        else:
            values = [rng.gauss(0.0, 0.02) for _ in range(n)]
        blob = struct.pack(f"<{n}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


if __name__ == "__main__":
    main(sys.argv[1])
