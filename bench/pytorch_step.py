"""PyTorch side of `fp8lm bench step --pytorch`: GPT-2 forward + backward in float32 on CPU
(with --optimizer also a torch.optim.AdamW step, as `bench step --train` does), same preset
and batch shape; prints JSON {tokens_per_s, step_s, threads, torch, openblas_coretype}.

fp8lm sets OPENBLAS_CORETYPE and ATEN_CPU_CAPABILITY from its own SIMD target (SkylakeX and
avx512 for avx512, Zen or Haswell and avx2 for avx2): Debian's OpenBLAS 0.3.21 otherwise
misdetects some CPUs, and a reference wider than fp8lm's target would compare instruction sets."""
import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
from torch_gpt2 import gpt2_loss, init_params  # noqa: E402

PRESETS = {"gpt2": (12, 12, 768, 1024, 50257), "gpt2-medium": (24, 16, 1024, 1024, 50257),
           "d6": (6, 6, 384, 256, 50257), "tiny": (2, 2, 64, 64, 512)}


def aten_capability():
    """The ATen kernel set in use, as torch's build summary reports it."""
    m = re.search(r"CPU capability usage: ([^\n]+)", torch.__config__.show())
    return m.group(1) if m else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--optimizer", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    L, NH, C, S, V = PRESETS[a.preset]
    params = {k: v.requires_grad_(True) for k, v in init_params(L, NH, C, S, V).items()}
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (a.batch, a.seq), generator=g)
    targets = torch.randint(0, V, (a.batch, a.seq), generator=g)
    decay = [p for p in params.values() if p.dim() == 2]
    no_decay = [p for p in params.values() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8) if a.optimizer else None

    def step():
        for p in params.values():
            p.grad = None
        loss = gpt2_loss(params, tokens, targets, NH)
        loss.backward()
        if opt is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
            opt.step()
        return loss.item()

    step()  # warm-up
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    t = times[len(times) // 2]
    print(json.dumps({"tokens_per_s": a.batch * a.seq / t, "step_s": t, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
                      "aten_capability": aten_capability()}))


if __name__ == "__main__":
    main()
