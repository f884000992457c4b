#!/usr/bin/env bash
# The main job. Until `fp8lm train` exists: build, then show `fp8lm convert` and
# `fp8lm inspect` on a generated GPT-2-shaped safetensors file, and time the cast kernel.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
fp8lm="$root/build/fp8lm"
out="$root/runs/demo"
mkdir -p "$out"

python3 "$root/scripts/make_sample.py" "$out/model.safetensors"
echo "== fp8lm inspect model.safetensors --format e4m3"
"$fp8lm" inspect "$out/model.safetensors" --format e4m3
echo "== fp8lm convert --to e4m3 --scaling tensor"
"$fp8lm" convert "$out/model.safetensors" "$out/model.e4m3.safetensors" --to e4m3 --scaling tensor
"$fp8lm" inspect "$out/model.e4m3.safetensors"
echo "== fp8lm convert back --to f32"
"$fp8lm" convert "$out/model.e4m3.safetensors" "$out/model.back.safetensors" --to f32
"$fp8lm" inspect "$out/model.back.safetensors"
ls -l "$out"
echo "== fp8lm bench cast"
"$fp8lm" bench cast
