"""A small GPT-2 written as Hugging Face publishes GPT-2 (model.safetensors with the
"transformer." prefix, Conv1D [in, out] weights, the causal-mask buffers attn.bias and
attn.masked_bias, lm_head.weight tied to wte, and config.json), and its logits computed by
PyTorch in float64 from the same file, for fp8lm's train.init_from parity test.

usage: hf_gpt2_parity.py DIR
Writes DIR/model.safetensors, DIR/config.json and DIR/expected.safetensors (tokens I32 [B, T],
logits F32 [B*T, V])."""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
from torch_gpt2 import gpt2_loss, init_params  # noqa: E402

N_LAYER, N_HEAD, N_EMBD, POSITIONS, VOCAB, B, T = 2, 4, 32, 24, 100, 2, 16
_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata=None):
    """Safetensors by its specification: u64 header length, JSON header, raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main(directory):
    g = torch.Generator().manual_seed(7)
    params = init_params(N_LAYER, N_HEAD, N_EMBD, POSITIONS, VOCAB, seed=3)
    # Biases and LayerNorm parameters away from 0 and 1, so a misplaced one shows.
    for name, p in params.items():
        if p.dim() == 1:
            p += 0.1 * torch.randn(p.shape, generator=g)
    # As published: F32, except wpe in F16 and the LayerNorm weights in BF16 (other files
    # use those dtypes); the reference computes on exactly the stored values.
    stored = {}
    for name, p in params.items():
        if name == "wpe.weight":
            p = p.to(torch.float16)
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight"):
            p = p.to(torch.bfloat16)
        stored[name] = p
    hf = {"transformer." + k: v for k, v in stored.items()}
    mask = torch.tril(torch.ones(POSITIONS, POSITIONS)).reshape(1, 1, POSITIONS, POSITIONS)
    for l in range(N_LAYER):
        hf[f"transformer.h.{l}.attn.bias"] = mask
        hf[f"transformer.h.{l}.attn.masked_bias"] = torch.tensor(-1e4)
    hf["lm_head.weight"] = stored["wte.weight"].clone()
    write_safetensors(os.path.join(directory, "model.safetensors"), hf, {"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "n_layer": N_LAYER, "n_head": N_HEAD, "n_embd": N_EMBD,
                   "n_positions": POSITIONS, "vocab_size": VOCAB, "activation_function": "gelu_new",
                   "layer_norm_epsilon": 1e-5}, f)

    tokens = torch.randint(0, VOCAB, (B, T), generator=g)
    weights = {k: v.double()[:T] if k == "wpe.weight" else v.double() for k, v in stored.items()}
    _, logits = gpt2_loss(weights, tokens, tokens, N_HEAD, return_logits=True)
    write_safetensors(os.path.join(directory, "expected.safetensors"),
                      {"tokens": tokens.to(torch.int32), "logits": logits.reshape(B * T, VOCAB).float()})
    print(f"torch {torch.__version__}: wrote a {N_LAYER}x{N_EMBD} GPT-2 and its logits to {directory}")


if __name__ == "__main__":
    main(sys.argv[1])
