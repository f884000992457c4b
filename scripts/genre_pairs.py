#!/usr/bin/env python3
"""Preference pairs for the Brown genre task from a model's own answers (on-policy "hard
negatives"): for each passage the right genre is chosen and the rejected one is the genre the
model answered when it was wrong, or a random wrong genre (seeded) when it was right or
answered something that is no genre.

usage: genre_pairs.py COMPLETIONS.jsonl GENRES.json OUT.jsonl [--seed N]
COMPLETIONS.jsonl is what `fp8lm sample --prompts TASK.jsonl --out COMPLETIONS.jsonl` writes
(each line: prompt, completion, reference). OUT.jsonl gets {"prompt", "chosen", "rejected"}
lines for `fp8lm prepare`; a summary line goes to stdout.
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brown_genre import jsonl, write_atomic  # noqa: E402


def main(completions, genres_json, out, seed=2026):
    names = [" " + g for g in json.load(open(genres_json, encoding="utf-8"))["genres"].values()]
    rng = random.Random(seed)
    pairs, own = [], 0
    with open(completions, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            r = json.loads(line)
            if "reference" not in r:
                sys.exit(f"{completions}:{n}: no \"reference\" (complete a task file with answers)")
            right, said = r["reference"], r["completion"]
            if said != right and said in names:
                rejected = said
                own += 1
            else:
                rejected = rng.choice([g for g in names if g != right])
            pairs.append({"prompt": r["prompt"], "chosen": right, "rejected": rejected})
    write_atomic(out, jsonl(pairs))
    print(f"{out}: {len(pairs)} pairs, {own} rejecting the model's own wrong answer")


if __name__ == "__main__":
    args = sys.argv[1:]
    seed = 2026
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    main(*args, seed=seed)
