#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every CTest test (unit,
# exhaustive cast sweeps over all 2^32 inputs, command-line end-to-end, the HTML report in
# headless Chromium).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh" chromium  # the report's browser test
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure
