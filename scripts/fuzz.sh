#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, ASan and UBSan into build-fuzz/, then
# runs each for SECONDS (default 60) on build-fuzz/corpus/<target> (seeded from
# fuzz/corpus/<target> and fuzz/regressions/<target>; the repository is never written) and
# prints one summary line per target. Exits 1 when any target finds something: the input is
# saved under build-fuzz/artifacts/<target>/ and the log under build-fuzz/logs/.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   bash scripts/fuzz.sh 30                       # every target, 30 s each (CI)
#   bash scripts/fuzz.sh 3600 fuzz_trainer_json   # one target for an hour
# Reproduce a finding: build-fuzz/fuzz/<target> <artifact>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
all_targets=(fuzz_safetensors fuzz_token_file fuzz_trainer_json fuzz_config fuzz_tokenizer)

seconds=${1:-60}
[[ $# -gt 0 ]] && shift
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "fuzz: SECONDS_PER_TARGET must be a positive integer, got '$seconds'" >&2
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...] (targets: ${all_targets[*]})" >&2
  exit 2
fi
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || {
    echo "fuzz: unknown target '$t' (known: ${all_targets[*]})" >&2
    exit 2
  }
done

# The project's own dependencies and data (GPT-2's tables for fuzz_tokenizer), and clang
# with its libFuzzer, ASan and UBSan runtimes (libclang-rt-14-dev is only a Recommends).
bash "$root/scripts/setup.sh" clang libclang-rt-14-dev

build="$root/build-fuzz"
echo "== fuzz: building ${targets[*]} in build-fuzz/ (clang, ASan + UBSan + libFuzzer)"
build_start=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DFP8LM_FUZZ=ON -DFP8LM_SANITIZE=ON \
  -DFP8LM_BUILD_TESTS=OFF -DFP8LM_BUILD_BENCH=OFF >/dev/null
nice cmake --build "$build" --target "${targets[@]}" -j "${FP8LM_FUZZ_BUILD_JOBS:-2}"
echo "fuzz: build took $(($(date +%s) - build_start)) s"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# The targets write every input to a scratch file: on tmpfs, since on a disk shared with
# builds the writes can stall the fuzzer twentyfold. Removed at exit (a crash leaves files).
scratch_root="$build/tmp"
[[ -d /dev/shm && -w /dev/shm ]] && scratch_root=$(mktemp -d /dev/shm/fp8lm-fuzz.XXXXXX)
trap 'rm -rf "$scratch_root"' EXIT
summary=()
findings=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  log="$build/logs/$t.log"
  tmp="$scratch_root/$t"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  rm -rf "$tmp" && mkdir -p "$tmp"
  # Seeds and known reproducers join the corpus this folder keeps from earlier runs.
  for src in "$root/fuzz/corpus/$t" "$root/fuzz/regressions/$t"; do
    [[ -d $src ]] && cp -n "$src"/* "$corpus"/ 2>/dev/null || true
  done
  dict=()
  [[ -f "$root/fuzz/$t.dict" ]] && dict=("-dict=$root/fuzz/$t.dict")
  echo "== fuzz: $t for $seconds s (log: build-fuzz/logs/$t.log)"
  start=$(date +%s)
  rc=0
  TMPDIR="$tmp" "$build/fuzz/$t" "$corpus" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
    >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if ((rc == 0)); then
    verdict="no finding"
  else
    findings=$((findings + 1))
    if [[ -n $artifact ]]; then
      verdict="FINDING: ${artifact#"$root/"}"
      # libFuzzer names an artifact by its content's SHA-1: say when it is a known reproducer.
      sha=${artifact##*-}
      for r in "$root/fuzz/regressions/$t"/*; do
        [[ -f $r && $(sha1sum <"$r" | cut -d' ' -f1) == "$sha" ]] && verdict+=" (= ${r#"$root/"})"
      done
    else
      verdict="FINDING: exit code $rc without an artifact, see build-fuzz/logs/$t.log"
    fi
    # The report itself: from the first sanitizer, property or exception line on.
    echo "---- $t: report (build-fuzz/logs/$t.log)"
    first=$(grep -m1 -n -E '^==[0-9]+==ERROR|runtime error:|^==fuzz==|terminate called|Assertion|ERROR: libFuzzer' \
      "$log" | cut -d: -f1 || true)
    if [[ -n $first ]]; then sed -n "${first},$((first + 59))p" "$log"; else tail -n 40 "$log"; fi
    echo "---- reproduce: build-fuzz/fuzz/$t ${artifact#"$root/"}"
  fi
  summary+=("$(printf '%-18s %5s s %12s execs %8s execs/s  %s' "$t" "$elapsed" "${execs:-?}" \
    "${rate:-?}" "$verdict")")
done

echo "== fuzz: summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
echo "fuzz: $((${#targets[@]} - findings)) passed, $findings failed"
((findings == 0))
