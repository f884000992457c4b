#!/usr/bin/env bash
# Final validation loss of the default model per FP8 recipe and level, side by side with fp32:
#   bash scripts/recipes.sh [STEPS]    (default 350 with 30 warm-up steps, the long run of
#                                       BENCHMARKS.md; each run's folder is runs/recipes/LEVEL-RECIPE)
# O3 runs on 2 MPI ranks of half the batch each (the same global batch).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=${1:-350}
bash "$root/scripts/build.sh" >/dev/null
cd "$root"
if [[ ! -f data/brown/train.bin || ! -f data/brown/val.bin ]]; then
  build/fp8lm prepare --tokenizer gpt2 --out data/brown data/brown/brown.txt
fi
mpi=(mpirun -n 2 --oversubscribe --bind-to none --mca btl self,vader)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run() {  # LEVEL RECIPE
  local out="runs/recipes/$1-$2" cmd=(build/fp8lm)
  local sets=(--set train.steps="$steps" --set train.warmup_steps=30 --set train.eval_every="$steps"
              --set train.checkpoint_every=0
              --set precision.level="$1" --set precision.recipe="$2" --set train.out_dir="$out")
  if [[ $1 == O3 ]]; then
    cmd=("${mpi[@]}" -x OMP_NUM_THREADS=1 build/fp8lm)
    sets+=(--set train.batch_size=8)
  fi
  "${cmd[@]}" train --overwrite "${sets[@]}" >"$out.log" 2>&1 || { echo "$1 $2: failed (see $out.log)"; return; }
  python3 - "$out/summary.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:5} {sys.argv[3]:8} val {s['final_val_loss']:.4f}  train {s['final_train_loss']:.4f}  {s['tokens_per_s']:.0f} tok/s")
PY
}
mkdir -p runs/recipes
echo "default model, $steps steps"
run fp32 delayed
for recipe in delayed jit block mxfp8; do run O2 "$recipe"; done
for recipe in block mxfp8; do run O1 "$recipe"; run O3 "$recipe"; done
