#!/usr/bin/env python3
"""Chaos test of checkpoint durability and exact resume for `fp8lm train`.

Kills training with SIGKILL at random moments (during process start-up, while stepping,
while a checkpoint is being written, after it), and checks after every kill that each
complete checkpoint left behind (every checkpoints/step-N folder; the hidden
`.step-N.tmp-PID` folders of interrupted writes are not checkpoints) is intact, then
resumes the run and kills it again. A run that completes must have logged exactly the
losses of an uninterrupted run, bit for bit.

What it does
  1. Writes a small byte-level corpus (llm.c token files) into the work folder.
  2. Reference: per precision level, one uninterrupted run of S steps with a checkpoint
     after every step (a tiny GPT, one thread); records the losses of metrics.jsonl and
     measures start-up time and step period (checkpoint included).
  3. Chaos runs, cycling the levels O2, fp32, bf16, O1: a fresh run in a new folder is
     killed after a delay drawn uniformly from [0, start-up + 3 step periods] (one kill in
     eight is drawn from the start-up time alone). After each kill:
       - a kill is counted as "during a checkpoint write" when a `.step-*.tmp-*` folder
         that was not there before the process started is present;
       - every complete checkpoint is verified: `fp8lm eval --checkpoint DIR --data VAL
         --batches 1` succeeds and prints a finite loss equal to the one of the
         reference's checkpoint of the same step, `fp8lm inspect` reads
         model.safetensors and optimizer.safetensors, and the three files are byte-identical
         to the reference's checkpoint of the same step; a complete checkpoint that
         disappeared is also an error;
       - the run is resumed with `--resume RUN_DIR` (same options) and killed again. A run
         killed before its first checkpoint is started afresh in a new folder.
     When a run completes, its metrics.jsonl must list steps 1..S once each, in order,
     with the reference's losses (compared as the exact text written) and validation
     lines. Then the next chaos run starts. After the K-th kill, the current run is resumed
     once more without a kill, so every chaos run is checked to the end.
  4. Prints a summary line and exits 1 on any corrupted or lost checkpoint, failed resume,
     inexact continuation or unexpected error (the work folder is then kept), 2 on bad
     usage.

Usage
  python3 scripts/chaos.py [--binary PATH] [--kills K] [--steps S] [--seed N]
                           [--workdir DIR] [--keep] [--levels L,L,...] [--jobs J]

  --binary   fp8lm executable (default: build/fp8lm in the repository of this script)
  --kills    number of SIGKILLs (default 50)
  --steps    training steps per run, S (default 12)
  --seed     seed of the kill times (default: random; printed, to replay a run)
  --workdir  empty folder for data and runs, kept (default: a new temporary folder,
             removed at the end unless --keep or a failure)
  --levels   precision levels cycled across chaos runs (default O2,fp32,bf16,O1)
  --jobs     concurrent verification processes (default 2)

  CI mode (well under 2 minutes on 2 cores):
      python3 scripts/chaos.py --kills 6 --steps 6 --seed 1
  Long mode (acceptance, at least 50 kills):
      python3 scripts/chaos.py --kills 60

Output ends with
  chaos: K kills (M during checkpoint writes), C checkpoints verified, 0 corrupted,
  R resumes, 0 failed resumes, bit-exact: yes

Runs never pass --overwrite: every fresh run gets a folder of its own, and only resumes
reuse a folder (a run folder may be locked by its writer; a kill releases it).
Python 3 standard library only.
"""

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LEVELS = ["O2", "fp32", "bf16", "O1"]
CKPT_RE = re.compile(r"^step-(\d+)$")
TMP_RE = re.compile(r"^\.step-(\d+)\.tmp-")
EVAL_RE = re.compile(r'\{"loss":\s*([^}\s]+)\s*\}')
CKPT_FILES = ("model.safetensors", "optimizer.safetensors", "trainer.json")
PROC_TIMEOUT = 600  # seconds for any process that is not meant to be killed


class Failure(Exception):
    """An unexpected error of the test itself or its environment."""


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------- data


def write_token_file(path, data):
    """llm.c's format: 256 little-endian int32 (magic, version, count, zeros), uint16s."""
    header = struct.pack("<256i", 20240520, 1, len(data), *([0] * 253))
    tokens = array("H", data)
    if sys.byteorder != "little":
        tokens.byteswap()
    with open(path, "wb") as f:
        f.write(header)
        f.write(tokens.tobytes())


def make_corpus(folder):
    animals = ["cat", "dog", "bird", "fox", "cow"]
    verbs = ["sat", "ran", "slept", "ate", "stood"]
    places = ["mat", "rug", "hill", "road", "bed"]

    def text(first, count):
        parts = []
        for i in range(first, first + count):
            a, v, p = animals[i % 5], verbs[(i // 5) % 5], places[(i // 25) % 5]
            parts.append(f"the {a} {v} on the {p} {i}. a dog ran. ")
        return "".join(parts).encode("ascii")

    train, val = folder / "train.bin", folder / "val.bin"
    write_token_file(train, text(0, 1000))  # about 40 KB
    write_token_file(val, text(5000, 100))  # about 4 KB
    return train, val


# ---------------------------------------------------------------------------- helpers


def child_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("FP8LM_TEST_")}


def run_quick(cmd, timeout=PROC_TIMEOUT):
    """Runs a command to completion; returns (returncode, stdout, stderr)."""
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {timeout} s"
    return r.returncode, r.stdout, r.stderr


def checkpoint_names(run_dir):
    """(complete: {step: name}, temporary: set of names) under run_dir/checkpoints."""
    try:
        names = os.listdir(run_dir / "checkpoints")
    except FileNotFoundError:
        return {}, set()
    complete, tmp = {}, set()
    for n in names:
        m = CKPT_RE.match(n)
        if m:
            complete[int(m.group(1))] = n
        elif TMP_RE.match(n):
            tmp.add(n)
    return complete, tmp


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metrics(path):
    """Step lines as [(step, loss text)] and evaluation lines as [(step, val_loss text)].
    Numbers are kept as the exact text written (parse_float=str), so equality is bit
    equality. Raises Failure on a malformed line."""
    steps, vals = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_float=str)
            except json.JSONDecodeError as e:
                raise Failure(f"{path}:{lineno}: not JSON ({e}): {line.strip()!r}")
            if "loss" in obj:
                steps.append((obj.get("step"), obj["loss"]))
            elif "val_loss" in obj:
                vals.append((obj.get("step"), obj["val_loss"]))
            else:
                raise Failure(f"{path}:{lineno}: neither loss nor val_loss: {line.strip()!r}")
    return steps, vals


def finite_text(x):
    try:
        return isinstance(x, str) and math.isfinite(float(x))
    except ValueError:
        return False


# ---------------------------------------------------------------------------- the test


class Chaos:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.binary = str(Path(args.binary).resolve())
        self.rng = random.Random(args.seed)
        self.train_bin, self.val_bin = make_corpus(work)
        self.refs = {}  # level -> reference facts
        self.ref_eval = {}  # (level, step) -> eval loss text
        self.ref_digest = {}  # (level, step, file) -> sha256
        self.kills = 0
        self.ckpt_kills = 0
        self.startup_kills = 0
        self.verified = 0
        self.corrupted = 0
        self.lost = 0
        self.resumes = 0
        self.failed_resumes = 0
        self.restarts = 0
        self.completed_runs = 0
        self.exact_runs = 0
        self.inexact_runs = 0
        self.errors = []  # messages of every failure
        self.run_counter = 0
        self.segment_counter = 0
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))

    # -- commands

    def train_cmd(self, level, run_dir, resume):
        s = self.args.steps
        sets = [
            "model.preset=tiny", "model.seq_len=32",
            f"data.train={self.train_bin}", f"data.val={self.val_bin}", "data.tokenizer=byte",
            "train.batch_size=4", "train.grad_accum=1", f"train.steps={s}",
            "train.warmup_steps=2", "train.eval_every=0", "train.eval_batches=2",
            "train.checkpoint_every=1", f"train.out_dir={run_dir}", "train.threads=1",
            f"precision.level={level}",
        ]
        cmd = [self.binary, "train"]
        for kv in sets:
            cmd += ["--set", kv]
        if resume:
            cmd += ["--resume", str(run_dir)]
        return cmd

    def start(self, cmd, tag):
        self.segment_counter += 1
        logf = self.work / "logs" / f"{self.segment_counter:04d}-{tag}.log"
        logf.parent.mkdir(exist_ok=True)
        out = open(logf, "w")
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                             stdin=subprocess.DEVNULL)
        out.close()
        return p, time.monotonic(), logf

    @staticmethod
    def tail(logf, lines=6):
        try:
            text = Path(logf).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    # -- reference

    def reference(self, level):
        if level in self.refs:
            return self.refs[level]
        S = self.args.steps
        run_dir = self.work / f"ref-{level}"
        p, t0, logf = self.start(self.train_cmd(level, run_dir, False), f"ref-{level}")
        first_tmp, done = {}, {}
        while p.poll() is None:
            complete, tmp = checkpoint_names(run_dir)
            now = time.monotonic() - t0
            for step in complete:
                done.setdefault(step, now)
            for n in tmp:
                first_tmp.setdefault(int(TMP_RE.match(n).group(1)), now)
            if now > PROC_TIMEOUT:
                p.kill()
                p.wait()
                raise Failure(f"reference run {level} timed out; log {logf}")
            time.sleep(0.003)
        total = time.monotonic() - t0
        if p.returncode != 0:
            raise Failure(f"reference run {level} failed with exit {p.returncode}: "
                          f"{self.tail(logf)} (log {logf})")
        steps, vals = read_metrics(run_dir / "metrics.jsonl")
        if [s for s, _ in steps] != list(range(1, S + 1)):
            raise Failure(f"reference run {level}: metrics steps {[s for s, _ in steps]}, "
                          f"expected 1..{S}")
        bad = [s for s, x in steps + vals if not finite_text(x)]
        if bad:
            raise Failure(f"reference run {level}: non-finite loss at steps {bad}")
        complete, _ = checkpoint_names(run_dir)
        if sorted(complete) != list(range(1, S + 1)):
            raise Failure(f"reference run {level}: checkpoints {sorted(complete)}, expected 1..{S}")
        # Timing: step period (step + checkpoint) and start-up from checkpoint appearances.
        times = [done.get(s) for s in range(1, S + 1)]
        if all(t is not None for t in times) and S >= 2:
            period = max((times[-1] - times[0]) / (S - 1), 0.005)
            startup = max(times[0] - period, 0.005)
        else:  # too fast to observe: spread evenly
            period = total / (S + 1)
            startup = period
        writes = [done[s] - first_tmp[s] for s in range(1, S + 1) if s in done and s in first_tmp]
        ref = {
            "dir": run_dir, "steps": steps, "vals": vals, "period": period,
            "startup": startup, "total": total,
            "write": sorted(writes)[len(writes) // 2] if writes else None,
        }
        self.refs[level] = ref
        # Reference evaluations and digests of every checkpoint, for exact comparison.
        jobs = {s: self.pool.submit(self.eval_checkpoint, run_dir / "checkpoints" / f"step-{s}")
                for s in range(1, S + 1)}
        for s, fut in jobs.items():
            ok, text = fut.result()
            if not ok:
                raise Failure(f"reference {level} step-{s}: eval failed: {text}")
            self.ref_eval[(level, s)] = text
            for f in CKPT_FILES:
                self.ref_digest[(level, s, f)] = file_digest(
                    run_dir / "checkpoints" / f"step-{s}" / f)
        log(f"reference {level}: {S} steps in {total:.2f} s (start-up {startup * 1e3:.0f} ms, "
            f"step+checkpoint {period * 1e3:.0f} ms, checkpoint write "
            f"{ref['write'] * 1e3 if ref['write'] is not None else float('nan'):.0f} ms), "
            f"final loss {steps[-1][1]}")
        return ref

    # -- verification

    def eval_checkpoint(self, ckpt):
        rc, out, err = run_quick([self.binary, "--threads", "1", "eval", "--checkpoint",
                                  str(ckpt), "--data", str(self.val_bin), "--batches", "1"])
        if rc != 0:
            return False, f"eval exit {rc}: {err.strip() or out.strip()}"
        m = EVAL_RE.search(out)
        if not m:
            return False, f"eval printed no loss: {out.strip()!r}"
        if not finite_text(m.group(1)):
            return False, f"eval loss not finite: {m.group(1)}"
        return True, m.group(1)

    def verify_one(self, level, step, ckpt):
        """Problems found with one complete checkpoint (empty: intact)."""
        problems = []
        for f in CKPT_FILES:
            if not (ckpt / f).is_file():
                problems.append(f"missing {f}")
        if problems:
            return problems
        ok, text = self.eval_checkpoint(ckpt)
        if not ok:
            problems.append(text)
        elif text != self.ref_eval.get((level, step)):
            problems.append(f"eval loss {text}, reference {self.ref_eval.get((level, step))}")
        for f in ("model.safetensors", "optimizer.safetensors"):
            rc, out, err = run_quick([self.binary, "--threads", "1", "inspect", str(ckpt / f)])
            if rc != 0:
                problems.append(f"inspect {f} exit {rc}: {err.strip() or out.strip()}")
        for f in CKPT_FILES:
            if file_digest(ckpt / f) != self.ref_digest.get((level, step, f)):
                problems.append(f"{f} differs from the reference's step-{step}")
        return problems

    def verify_all(self, level, run_dir, context):
        complete, _ = checkpoint_names(run_dir)
        futs = {step: self.pool.submit(self.verify_one, level, step,
                                       run_dir / "checkpoints" / name)
                for step, name in sorted(complete.items())}
        for step, fut in futs.items():
            problems = fut.result()
            self.verified += 1
            if problems:
                self.corrupted += 1
                self.error(f"corrupted checkpoint {run_dir}/checkpoints/step-{step} "
                           f"({context}): " + "; ".join(problems))
        return set(complete)

    def check_completed(self, level, run_dir, logf):
        ref = self.reference(level)
        S = self.args.steps
        self.completed_runs += 1
        try:
            steps, vals = read_metrics(run_dir / "metrics.jsonl")
        except (Failure, OSError) as e:
            self.inexact_runs += 1
            self.error(f"run {run_dir}: {e}")
            return False
        problems = []
        got = [s for s, _ in steps]
        if got != list(range(1, S + 1)):
            problems.append(f"metrics steps {got}, expected 1..{S} once each in order")
        diffs = [(s, x, r) for (s, x), (_, r) in zip(steps, ref["steps"]) if x != r]
        if diffs:
            s, x, r = diffs[0]
            problems.append(f"{len(diffs)} losses differ from the reference, first at step "
                            f"{s}: {x} vs {r}")
        if vals != ref["vals"]:
            problems.append(f"validation lines {vals}, reference {ref['vals']}")
        if not (run_dir / "summary.json").is_file():
            problems.append("no summary.json")
        if problems:
            self.inexact_runs += 1
            self.error(f"completed run {run_dir} ({level}; last log {logf}): " + "; ".join(problems))
            return False
        self.exact_runs += 1
        return True

    def error(self, msg):
        self.errors.append(msg)
        log("  FAIL: " + msg)

    # -- the chaos loop

    def kill_delay(self, ref):
        bound = ref["startup"] + 3.0 * ref["period"]
        if self.rng.random() < 0.125:
            return self.rng.uniform(0.0, ref["startup"])
        return self.rng.uniform(0.0, bound)

    def chaos(self):
        levels = self.args.levels
        K = self.args.kills
        run_index = 0
        while self.kills < K:
            level = levels[run_index % len(levels)]
            run_index += 1
            self.chaos_run(level, K)
        self.pool.shutdown()

    def new_run_dir(self, level):
        self.run_counter += 1
        return self.work / f"chaos-{self.run_counter:03d}-{level}"

    def chaos_run(self, level, K):
        """One chaos run: fresh start, kills and resumes until it completes (the kills stop
        once K have happened)."""
        ref = self.reference(level)
        run_dir = self.new_run_dir(level)
        resume = False
        known = set()  # complete checkpoints seen so far in run_dir
        while True:
            cmd = self.train_cmd(level, run_dir, resume)
            tag = f"{run_dir.name}-{'resume' if resume else 'fresh'}"
            _, tmp_before = checkpoint_names(run_dir)
            kill_at = self.kill_delay(ref) if self.kills < K else None
            p, t0, logf = self.start(cmd, tag)
            if resume:
                self.resumes += 1
            killed = False
            try:
                p.wait(timeout=kill_at if kill_at is not None else PROC_TIMEOUT)
            except subprocess.TimeoutExpired:
                if kill_at is None:
                    p.kill()
                    p.wait()
                    raise Failure(f"{' '.join(cmd)} did not finish in {PROC_TIMEOUT} s")
                os.kill(p.pid, signal.SIGKILL)  # not yet reaped: the pid is still ours
                p.wait()
                killed = p.returncode == -signal.SIGKILL
            elapsed = time.monotonic() - t0
            if killed:
                self.kills += 1
                complete, tmp = checkpoint_names(run_dir)
                in_write = bool(tmp - tmp_before)
                self.ckpt_kills += in_write
                in_startup = elapsed < ref["startup"]
                self.startup_kills += in_startup
                latest = max(complete) if complete else 0
                where = ("during a checkpoint write" if in_write else
                         "during start-up" if in_startup else "")
                log(f"kill {self.kills}/{K}: {run_dir.name} {'resume' if resume else 'fresh'} "
                    f"at {elapsed * 1e3:.0f} ms, latest step-{latest}"
                    + (f", {where}" if where else ""))
                gone = known - set(complete)
                if gone:
                    self.lost += len(gone)
                    self.error(f"{run_dir}: complete checkpoints {sorted(gone)} disappeared "
                               f"(log {logf})")
                known = self.verify_all(level, run_dir,
                                        f"after kill {self.kills} at {elapsed:.3f} s, log {logf}")
                if not known:
                    # Killed before its first checkpoint: nothing to resume; start afresh.
                    self.restarts += 1
                    run_dir = self.new_run_dir(level)
                    resume = False
                else:
                    resume = True
                continue
            if p.returncode != 0:
                if resume:
                    self.failed_resumes += 1
                self.error(f"{'resume' if resume else 'fresh run'} of {run_dir} exited "
                           f"{p.returncode}: {self.tail(logf)} (log {logf})")
                return
            # Completed.
            known_before = known
            known = self.verify_all(level, run_dir, f"completed run, log {logf}")
            gone = known_before - known
            if gone:
                self.lost += len(gone)
                self.error(f"{run_dir}: complete checkpoints {sorted(gone)} disappeared")
            exact = self.check_completed(level, run_dir, logf)
            log(f"run {run_dir.name} completed ({'resumed' if resume else 'never killed'}): "
                f"{'losses bit-exact' if exact else 'NOT bit-exact'}")
            return

    def summary(self):
        exact = self.inexact_runs == 0 and self.completed_runs > 0
        log(f"chaos runs completed: {self.completed_runs} ({self.exact_runs} bit-exact), "
            f"fresh restarts after a kill before the first checkpoint: {self.restarts}, "
            f"kills during start-up: {self.startup_kills}, lost checkpoints: {self.lost}")
        log(f"chaos: {self.kills} kills ({self.ckpt_kills} during checkpoint writes), "
            f"{self.verified} checkpoints verified, {self.corrupted} corrupted, "
            f"{self.resumes} resumes, {self.failed_resumes} failed resumes, "
            f"bit-exact: {'yes' if exact else 'no'}")
        return exact and not self.errors


def main():
    ap = argparse.ArgumentParser(description="Chaos test of fp8lm checkpoints and resume "
                                 "(see the docstring of this script).")
    ap.add_argument("--binary", default=str(REPO / "build" / "fp8lm"))
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--levels", default=",".join(DEFAULT_LEVELS))
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    args.levels = [x for x in args.levels.split(",") if x]
    if args.kills < 1 or args.steps < 2 or not args.levels or args.jobs < 1:
        ap.error("need --kills >= 1, --steps >= 2, --jobs >= 1 and at least one level")
    if not os.access(args.binary, os.X_OK):
        ap.error(f"{args.binary}: not an executable (build it with scripts/build.sh)")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "little")

    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            ap.error(f"{work}: not empty")
        created = False
    else:
        work = Path(tempfile.mkdtemp(prefix="fp8lm-chaos-"))
        created = True
    log(f"chaos: seed {args.seed}, {args.kills} kills, {args.steps} steps, levels "
        f"{','.join(args.levels)}, binary {args.binary}, work folder {work}")
    t0 = time.monotonic()
    c = None
    ok = False
    try:
        c = Chaos(args, work)
        c.chaos()
        ok = c.summary()
    except Failure as e:
        log(f"chaos: error: {e}")
        if c is not None:
            c.summary()
    except KeyboardInterrupt:
        log("chaos: interrupted")
    except Exception:  # an unexpected error of the test: report it, keep the folder
        import traceback
        traceback.print_exc()
        if c is not None:
            c.summary()
    log(f"chaos: {time.monotonic() - t0:.1f} s, {'passed' if ok else 'FAILED'}")
    if c is not None and c.errors:
        log("failures:")
        for e in c.errors:
            log("  " + e)
    if ok and created and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"chaos: work folder kept: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
