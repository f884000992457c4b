#!/usr/bin/env bash
# fp8lm report rendered in a real browser (headless Chromium): a short training run with
# telemetry on every other step and the four experiments at toy sizes go into one report;
# Chromium must load it with no console message (the page has no script, so any is an
# error; a page with a console error is loaded first to prove the check sees one), the
# DOM must hold the charts, and the screenshot must not be blank.
# Usage: report_browser_test.sh FP8LM_BINARY [DIR...]
#   With DIRs (a run folder and the four experiment folders, e.g. runs/default
#   runs/experiments/*), the same checks run on a report of those instead.
set -euo pipefail
fp8lm=$(realpath "$1")
shift
given=()
for d in "$@"; do given+=("$(realpath "$d")"); done
browser=$(command -v chromium || true)
if [[ -z $browser ]]; then
  echo "chromium not found: install it with 'bash scripts/setup.sh chromium' (scripts/test.sh does)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

if (( ${#given[@]} > 0 )); then
  "$fp8lm" report "${given[@]}" --out report.html > /dev/null
else
# Byte-level token files (no tokenizer tables needed).
for i in $(seq 1200); do echo "the cat sat on the mat $((i % 7))."; done > corpus.txt
"$fp8lm" prepare --tokenizer byte --val-fraction 0.1 --out tok corpus.txt > /dev/null
data="--set model.preset=tiny --set model.seq_len=32 --set data.tokenizer=byte \
  --set data.train=tok/train.bin --set data.val=tok/val.bin --set train.batch_size=4 \
  --set train.eval_every=2 --set train.eval_batches=2 --set train.checkpoint_every=0 \
  --set train.warmup_steps=1"
# shellcheck disable=SC2086
"$fp8lm" train $data --set train.steps=6 --set telemetry.every=2 --set train.out_dir=run > /dev/null
"$fp8lm" experiment zero-placement --ranks 2,8 --out zp > /dev/null
"$fp8lm" experiment grad-scaling --steps 2 --ranks 1,2,4 --layers 1 --width 16 --seq 16 \
  --data tok/train.bin --out gs > /dev/null
"$fp8lm" experiment formats --steps 2 --ranks 2 --layers 1 --width 16 --seq 16 \
  --data tok/train.bin --out fm > /dev/null
# shellcheck disable=SC2086
"$fp8lm" experiment precision-decoupling --rows 0,2a,4 $data --set train.steps=2 \
  --out pd > /dev/null
"$fp8lm" report run zp gs fm pd --out report.html > /dev/null
fi

load() {  # load PAGE: writes dom.html, shot.png, console.txt
  rm -f shot.png
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --user-data-dir="$work/profile" \
    --enable-logging=stderr --v=0 --window-size=1280,4000 --screenshot="$work/shot.png" \
    "file://$work/$1" 2> browser.txt > /dev/null
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --user-data-dir="$work/profile" \
    --dump-dom "file://$work/$1" 2> /dev/null > dom.html
  grep ':CONSOLE' browser.txt > console.txt || true
}

# The check sees a console error when there is one.
echo '<!DOCTYPE html><html><body><script>console.error("planted")</script></body></html>' > bad.html
load bad.html
grep -q planted console.txt || { echo "FAIL: the console check did not see a planted error" >&2; exit 1; }

load report.html
if [[ -s console.txt ]]; then
  echo "FAIL: console messages while loading the report:" >&2
  cat console.txt >&2
  exit 1
fi
[[ -s shot.png ]] || { echo "FAIL: no screenshot" >&2; exit 1; }

python3 - <<'EOF'
import re, struct, sys, zlib

dom = open("dom.html", encoding="utf-8").read()
svgs = dom.count("<svg")
paths = len(re.findall(r"<path d=\"M", dom))
needed = ["Training loss", "Validation loss", "Learning rate", "Gradient norm",
          "Peak memory per category", "FP8 telemetry: ", "Underflow, ", "Saturation, ",
          "Experiment grad-scaling", "Experiment formats", "Experiment precision-decoupling",
          "Experiment zero-placement", "N = 2"]
missing = [n for n in needed if n not in dom]
if missing or svgs < 20 or paths < 20:
    sys.exit(f"FAIL: report DOM: {svgs} svg, {paths} drawn paths, missing {missing}")

# Decode the PNG screenshot (8-bit RGB/RGBA, not interlaced) and count non-white pixels.
data = open("shot.png", "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colored = 0
colors = set()
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    if y % 4 == 0:  # a sample of the rows is enough
        for x in range(0, w, 2):
            px = tuple(line[x * bpp:x * bpp + 3])
            colors.add(px)
            if px != (255, 255, 255):
                colored += 1
    prev = line
share = colored / ((h // 4 + 1) * (w // 2))
if share < 0.02 or len(colors) < 16:
    sys.exit(f"FAIL: screenshot looks blank: {share:.4f} non-white, {len(colors)} colours")
print(f"report: {svgs} svg, {paths} paths; screenshot {w}x{h}, {share:.1%} non-white, "
      f"{len(colors)} colours")
EOF
echo "report_browser: OK"
