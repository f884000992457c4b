"""Parity of fp8lm's DPO and GRPO losses and gradients with PyTorch autograd (fp32 model).

usage: post_train_parity.py DIR N_HEAD BETA CLIP KL
DIR holds policy.safetensors and ref/model.safetensors (the two models' weights),
batch.safetensors (dpo_tokens, dpo_targets, grpo_tokens, grpo_targets: I32 [B, T];
grpo_advantages: F32 [B]; grpo_old_losses: F32 [B, T], the sampling policy's -log p) and
fp8lm.safetensors (dpo_loss, grpo_loss [1]; the gradient of each parameter as "dpo.NAME"
and "grpo.NAME"). PyTorch recomputes both losses in float64 from the same inputs:
  DPO:  mean over pairs (rows 2i chosen, 2i+1 rejected) of -log sigmoid(beta((pi_c - ref_c)
        - (pi_r - ref_r))), pi and ref the summed log-probabilities of the row's targets;
  GRPO: mean over rows of the mean over its targets of -(min(r A, clip(r, 1-eps, 1+eps) A)
        - kl (exp(ref - lp) - (ref - lp) - 1)), r = exp(lp - old_lp);
and each fp8lm tensor must be within 1e-4 relative error (max |a - b| / max |b|)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_gpt2 import gpt2_logits, read_safetensors  # noqa: E402

TOLERANCE = 1e-4


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def token_logps(params, tokens, targets, n_head):
    """log p(target) per position [B, T] (0 where target < 0), and the mask."""
    logp = gpt2_logits(params, tokens, n_head).log_softmax(-1)
    mask = targets >= 0
    lp = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * mask, mask


def main(directory, n_head, beta, clip, kl):
    weights, _ = read_safetensors(os.path.join(directory, "policy.safetensors"))
    ref_w, _ = read_safetensors(os.path.join(directory, "ref", "model.safetensors"))
    batch, _ = read_safetensors(os.path.join(directory, "batch.safetensors"))
    ours, _ = read_safetensors(os.path.join(directory, "fp8lm.safetensors"))
    ref = {k: v.double() for k, v in ref_w.items()}
    rows = []
    for objective in ("dpo", "grpo"):
        params = {k: v.double().requires_grad_(True) for k, v in weights.items()}
        tokens = batch[f"{objective}_tokens"].long()
        targets = batch[f"{objective}_targets"].long()
        lp, mask = token_logps(params, tokens, targets, n_head)
        with torch.no_grad():
            ref_lp, _ = token_logps(ref, tokens, targets, n_head)
        if objective == "dpo":
            pi, rho = lp.sum(-1), ref_lp.sum(-1)
            z = beta * ((pi[0::2] - rho[0::2]) - (pi[1::2] - rho[1::2]))
            loss = -F.logsigmoid(z).mean()
        else:
            adv = batch["grpo_advantages"].double().unsqueeze(-1)
            old_lp = -batch["grpo_old_losses"].double()
            ratio = torch.exp(lp - old_lp)
            surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
            d = ref_lp - lp
            k3 = torch.exp(d) - d - 1
            per_token = -(surrogate - kl * k3) * mask
            loss = (per_token.sum(-1) / mask.sum(-1)).mean()
        loss.backward()
        rows.append((f"{objective} loss", rel_err(ours[f"{objective}_loss"].double(),
                                                  loss.detach().reshape(1))))
        rows += [(f"{objective}.{name}", rel_err(ours[f"{objective}.{name}"].double(), p.grad))
                 for name, p in params.items()]
    worst = max(e for _, e in rows)
    for name, e in rows:
        print(f"{name:36s} rel err {e:.2e}{'  FAIL' if e > TOLERANCE else ''}")
    print(f"torch {torch.__version__}: DPO and GRPO worst relative error {worst:.2e} "
          f"(tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]),
                  float(sys.argv[5])))
