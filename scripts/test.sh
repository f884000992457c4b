#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CTest test (unit,
# exhaustive cast sweeps over all 2^32 inputs, command-line end-to-end).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure
