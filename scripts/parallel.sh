#!/usr/bin/env bash
# Tensor, sequence and pipeline parallelism against one process (docs/parallelism.md).
# Tensor and sequence parallelism (part "tp"):
#   1. fp32, a tiny model on Brown text (byte tokens), 20 steps: tp 2 (with and without
#      sequence parallelism) and tp 2 x dp 2 against one process; a tp 2 checkpoint resumed on
#      one process and on 2 data-parallel ranks. Prints the largest relative loss difference.
#   2. O2, the default model, 60 steps: final validation loss at tp 2 against one process.
#   3. gpt2 shapes (4 x 256 tokens, O2), 2 steps: tensor-parallel bytes per step with FP8 vs
#      BF16 gathers and without sequence parallelism; per-rank memory against tp 1.
# Pipeline parallelism (part "pp"):
#   4. fp32, the tiny model, 20 steps of 4 micro-batches: pp 2 and tp 2 x pp 2 against one
#      process; resumed across layouts.
#   5. O2, the default model, 60 steps of 4 micro-batches: final validation loss at pp 2 (BF16
#      and E4M3 activations between the stages) against one process; memory per rank.
#   6. 1F1B idle time: pp 2, 8 micro-batches, per stage against (p-1)/(m+p-1), on stages of
#      equal work (6 x 384, byte vocabulary) and on the default model (its 50k-row LM head
#      makes the last stage the slow one).
# Usage: bash scripts/parallel.sh [tp|pp]   (runs in runs/parallel/; both parts: about 20
# minutes on 2 cores)
part=${1:-all}
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh" >/dev/null
cd "$root"
if [[ ! -f data/brown/train.bin || ! -f data/brown/val.bin ]]; then
  build/fp8lm prepare --tokenizer gpt2 --out data/brown data/brown/brown.txt >/dev/null
fi
out=runs/parallel
mkdir -p "$out/bytes"
[[ -f $out/bytes/train.bin ]] || build/fp8lm prepare --tokenizer byte --out "$out/bytes" data/brown/brown.txt >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi() { local n=$1; shift; mpirun -n "$n" --oversubscribe --bind-to none --mca btl self,vader "$@"; }
train() {  # RANKS NAME ARGS... (RANKS 0: one process)
  local n=$1 name=$2; shift 2
  local cmd=(build/fp8lm train --overwrite --set train.out_dir="$out/$name" "$@")
  if [[ $n == 0 ]]; then "${cmd[@]}"; else mpi "$n" "${cmd[@]}"; fi >"$out/$name.log" 2>&1 ||
    { echo "$name failed: see $out/$name.log"; exit 1; }
}
compare() {  # NAME_A NAME_B [LAST_N]: largest relative difference of the per-step losses
  python3 - "$out/$1/metrics.jsonl" "$out/$2/metrics.jsonl" "${3:-0}" "$1" "$2" <<'PY'
import json, sys
def losses(p): return [j["loss"] for j in map(json.loads, open(p)) if "loss" in j]
a, b, n = losses(sys.argv[1]), losses(sys.argv[2]), int(sys.argv[3])
if n: a = a[-n:]
assert len(a) == len(b), (len(a), len(b))
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"  {sys.argv[5]:>14} vs {sys.argv[4]:<12} {len(a)} steps, max relative difference {worst:.1e}")
PY
}

tiny=(--set model.preset=tiny --set model.seq_len=32 --set data.tokenizer=byte
      --set data.train="$out/bytes/train.bin" --set data.val="$out/bytes/val.bin"
      --set train.batch_size=4 --set train.warmup_steps=2 --set train.steps=20
      --set train.eval_every=10 --set train.checkpoint_every=10 --set telemetry.every=0
      --set precision.level=fp32 --set train.grad_accum=2)
d6=(--set train.steps=60 --set train.warmup_steps=30 --set train.eval_every=60 --set train.checkpoint_every=0
    --set telemetry.every=0)
if [[ $part == all || $part == tp ]]; then
echo "1. fp32, tiny model (2 layers x 64, byte tokens), 20 steps"
train 0 one "${tiny[@]}"
train 2 tp2 "${tiny[@]}" --set parallel.tp=2
train 2 tp2_nosp "${tiny[@]}" --set parallel.tp=2 --set parallel.sequence=false
train 4 tp2dp2 "${tiny[@]}" --set parallel.tp=2 --set train.grad_accum=1
train 0 tp2_to_one "${tiny[@]}" --resume "$out/tp2/checkpoints/step-10"
train 2 tp2_to_dp2 "${tiny[@]}" --set train.grad_accum=1 --resume "$out/tp2/checkpoints/step-10"
compare one tp2
compare one tp2_nosp
compare one tp2dp2
compare tp2 tp2_to_one 10
compare tp2 tp2_to_dp2 10

echo "2. O2, default model, 60 steps"
train 0 d6_one "${d6[@]}"
train 2 d6_tp2 "${d6[@]}" --set parallel.tp=2
python3 - "$out/d6_one/summary.json" "$out/d6_tp2/summary.json" <<'PY'
import json, sys
a, b = (json.load(open(p))["final_val_loss"] for p in sys.argv[1:3])
print(f"  final val loss: one process {a:.4f}, tp 2 {b:.4f} ({100 * (b - a) / a:+.2f}%)")
PY

echo "3. gpt2 shapes, O2, 4 x 256 tokens per step, 2 steps (bytes per step, peak MiB per rank)"
g2=(--set model.preset=gpt2 --set model.seq_len=256 --set train.batch_size=4 --set train.steps=2
    --set train.eval_every=0 --set train.checkpoint_every=0 --set telemetry.every=0
    --set train.threads=1)
train 0 g2_tp1 "${g2[@]}"
train 2 g2_sp_fp8 "${g2[@]}" --set parallel.tp=2
train 2 g2_sp_bf16 "${g2[@]}" --set parallel.tp=2 --set parallel.gather=bf16
train 2 g2_tp_only "${g2[@]}" --set parallel.tp=2 --set parallel.sequence=false
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = [("g2_tp1", "tp 1"), ("g2_sp_fp8", "tp 2, SP, FP8 gathers"),
        ("g2_sp_bf16", "tp 2, SP, BF16 gathers"), ("g2_tp_only", "tp 2, no SP")]
mib = lambda b: b / 2**20
for name, label in runs:
    s = json.load(open(f"{out}/{name}/summary.json"))
    c = {k: v for k, v in s["comm_bytes_per_step"].items() if k.startswith("tp.")}
    gathers = sum(v for k, v in c.items() if "allgather" in k)
    print(f"  {label:24} tp bytes/step {mib(sum(c.values())):7.1f} MiB (gathers {mib(gathers):6.1f})  "
          + "  ".join(f"{k[3:]} {mib(v):.1f}" for k, v in sorted(c.items()) if v >= 2**16))
    peaks = s["per_rank_peak_mib"][0]
    print("  " + " " * 24 + " rank 0 peak MiB: " + ", ".join(
        f"{k} {peaks[k]:.0f}" for k in ("master", "optim_m1", "optim_m2", "gradients",
                                          "activations", "workspace")))
PY
fi

[[ $part == all || $part == pp ]] || exit 0
echo "4. fp32, tiny model, 20 steps of 4 micro-batches (1F1B)"
train 0 pp_one "${tiny[@]}" --set train.grad_accum=4
train 2 pp2 "${tiny[@]}" --set train.grad_accum=4 --set parallel.pp=2
train 4 tp2pp2 "${tiny[@]}" --set train.grad_accum=4 --set parallel.pp=2 --set parallel.tp=2
train 0 pp2_to_one "${tiny[@]}" --set train.grad_accum=4 --resume "$out/pp2/checkpoints/step-10"
train 2 pp2_to_dp2 "${tiny[@]}" --resume "$out/pp2/checkpoints/step-10"
train 0 tp2pp2_to_one "${tiny[@]}" --set train.grad_accum=4 --resume "$out/tp2pp2/checkpoints/step-10"
train 2 tp2pp2_to_dp2 "${tiny[@]}" --resume "$out/tp2pp2/checkpoints/step-10"
train 4 one_to_tp2pp2 "${tiny[@]}" --set train.grad_accum=4 --set parallel.pp=2 --set parallel.tp=2 \
  --resume "$out/pp_one/checkpoints/step-10"
compare pp_one pp2
compare pp_one tp2pp2
compare pp2 pp2_to_one 10
compare pp2 pp2_to_dp2 10
compare tp2pp2 tp2pp2_to_one 10
compare tp2pp2 tp2pp2_to_dp2 10
compare pp_one one_to_tp2pp2 10

echo "5. O2, default model, 60 steps of 4 micro-batches of 2 x 256 tokens"
d6pp=("${d6[@]}" --set train.batch_size=2 --set train.grad_accum=4)
train 0 d6pp_one "${d6pp[@]}"
train 2 d6pp_bf16 "${d6pp[@]}" --set parallel.pp=2
train 2 d6pp_e4m3 "${d6pp[@]}" --set parallel.pp=2 --set parallel.pp_wire=e4m3
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
s = {n: json.load(open(f"{out}/{n}/summary.json")) for n in ("d6pp_one", "d6pp_bf16", "d6pp_e4m3")}
a = s["d6pp_one"]["final_val_loss"]
for n, label in (("d6pp_bf16", "pp 2, BF16 activations"), ("d6pp_e4m3", "pp 2, E4M3 activations")):
    b = s[n]["final_val_loss"]
    sent = sum(v for k, v in s[n]["comm_bytes_per_step"].items() if k.startswith("pp.send"))
    print(f"  {label:24} val {b:.4f} vs one process {a:.4f} ({100 * (b - a) / a:+.2f}%), "
          f"sent {sent / 2**20:.1f} MiB/step")
for n in ("d6pp_one", "d6pp_bf16"):
    for r, peaks in enumerate(s[n]["per_rank_peak_mib"]):
        print(f"  {n:10} rank {r} peak MiB: " + ", ".join(
            f"{k} {peaks[k]:.0f}" for k in ("master", "optim_m1", "optim_m2", "gradients",
                                              "activations", "workspace")))
PY

echo "6. 1F1B idle time, pp 2, 8 micro-batches of 2 x 256 tokens, O2, 8 steps (the first is not counted)"
idle=(--set train.batch_size=2 --set train.grad_accum=8 --set train.steps=8 --set train.eval_every=0
      --set train.checkpoint_every=0 --set telemetry.every=0 --set parallel.pp=2)
train 2 idle_equal "${idle[@]}" --set model.preset=tiny --set model.n_layer=6 --set model.n_embd=384 \
  --set model.n_head=6 --set model.seq_len=256 --set data.tokenizer=byte \
  --set data.train="$out/bytes/train.bin" --set data.val="$out/bytes/val.bin"
train 2 idle_d6 "${idle[@]}"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for n, label in (("idle_equal", "6 x 384, byte vocabulary"), ("idle_d6", "default model (d6)")):
    p = json.load(open(f"{out}/{n}/summary.json"))["pipeline"]
    print(f"  {label:26} idle per stage " + ", ".join(f"{100 * f:.1f}%" for f in p["idle_fraction"])
          + f"; 1F1B bubble (p-1)/(m+p-1) = {100 * p['bubble_1f1b']:.1f}%")
PY
