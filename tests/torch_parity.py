"""Parity of fp8lm's fp32 GPT-2 with PyTorch: loss, logits and every parameter gradient.

usage: torch_parity.py DIR N_HEAD
DIR holds model.safetensors (fp8lm's weights), batch.safetensors (tokens, targets: I32
[B, T]) and fp8lm.safetensors (loss [1], logits [B*T, V], and one gradient per parameter
under its own name). PyTorch recomputes everything in float64 from the same weights; each
fp8lm tensor must be within 1e-4 relative error (max |a - b| / max |b|). Exit 1 otherwise."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
from torch_gpt2 import gpt2_loss, read_safetensors  # noqa: E402

TOLERANCE = 1e-4


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def main(directory, n_head):
    weights, _ = read_safetensors(os.path.join(directory, "model.safetensors"))
    batch, _ = read_safetensors(os.path.join(directory, "batch.safetensors"))
    ours, _ = read_safetensors(os.path.join(directory, "fp8lm.safetensors"))
    params = {k: v.double().requires_grad_(True) for k, v in weights.items()}
    tokens, targets = batch["tokens"].long(), batch["targets"].long()
    loss, logits = gpt2_loss(params, tokens, targets, n_head, return_logits=True)
    loss.backward()
    rows = [("loss", rel_err(ours["loss"].double(), loss.detach().reshape(1))),
            ("logits", rel_err(ours["logits"].double(), logits.detach().reshape(ours["logits"].shape)))]
    rows += [(name, rel_err(ours[name].double(), p.grad)) for name, p in params.items()]
    worst = max(e for _, e in rows)
    for name, e in rows:
        print(f"{name:32s} rel err {e:.2e}{'  FAIL' if e > TOLERANCE else ''}")
    print(f"torch {torch.__version__}: worst relative error {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
