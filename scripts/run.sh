#!/usr/bin/env bash
# The main job: set up, build, tokenize the default corpus (the Brown corpus, GPT-2 BPE)
# once, and train the embedded default model (a small GPT at level O2). Extra arguments go
# to `fp8lm train` (e.g. --set train.steps=50, --resume runs/default).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
cd "$root"
if [[ ! -f data/brown/train.bin || ! -f data/brown/val.bin ]]; then
  build/fp8lm prepare --tokenizer gpt2 --out data/brown data/brown/brown.txt
fi
build/fp8lm train "$@"
