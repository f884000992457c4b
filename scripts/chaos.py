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
  2. Reference, per precision level: one uninterrupted run of S steps with a checkpoint
     after every step (a tiny GPT, one thread); its losses (metrics.jsonl), the eval loss
     and the bytes of every checkpoint are recorded. Its step-1 checkpoint is then
     continued in a new folder, which must log the reference's losses of steps 2..S.
  3. Chaos runs, cycling the levels (O2, fp32, bf16, O1): a fresh run in a new folder is
     killed after a delay drawn uniformly from [0, start-up + 3 step periods]; one kill in
     eight is drawn from [0, start-up] instead, and one in eight lands right after the
     rename of one of the next three checkpoints (the folder is watched every 0.2 ms).
     Start-up (fresh and resumed) and step period (checkpoint included) are learnt from
     the moments checkpoints appear, in the reference and in every process since. After
     each kill:
       - it counts as "during a checkpoint write" when a `.step-*.tmp-*` folder that was
         not there before the process started is present, as "before the first step"
         when the process left no new metrics line and no new checkpoint folder, as
         "right after a checkpoint appeared" when aimed so;
       - every complete checkpoint of the run is verified: `fp8lm eval --checkpoint DIR
         --data VAL --batches 1` succeeds and prints a finite loss, equal to the
         reference's checkpoint's of the same step; `fp8lm inspect` reads
         model.safetensors and optimizer.safetensors; the three files are byte-identical
         to the reference's of the same step. A complete checkpoint that disappeared is
         an error too;
       - the run is resumed with `--resume RUN_DIR` (same options) and killed again. A run
         killed before its first complete checkpoint is started afresh in a new folder.
     A completed run must have resumed from its latest checkpoint, and its metrics.jsonl
     must list steps 1..S once each, in order, with the reference's losses and validation
     lines (compared as the exact text written, which round-trips the doubles), and its
     summary.json the same final losses. Then the next chaos run starts. After the K-th
     kill the current run is resumed once more without a kill, so every chaos run is
     checked to its end. Files of interrupted writes left in completed run folders are
     listed (a note, not an error).
  4. Prints the summary line and exits 1 on any corrupted or lost checkpoint, failed
     resume, inexact continuation, completed run folder without its summary.json or
     unexpected error (the work folder is then kept and
     the failures are listed with the logs of the processes), 2 on bad usage.

Usage
  python3 scripts/chaos.py [--binary PATH] [--kills K] [--steps S] [--seed N]
                           [--workdir DIR] [--keep] [--levels L,L,...] [--jobs J]

  --binary   fp8lm executable (default: build/fp8lm in the repository of this script)
  --kills    number of SIGKILLs (default 50)
  --steps    training steps per run, S (default 12)
  --seed     seed of the kill delays (default: random; printed; the moments the kills
             land still depend on the machine's speed)
  --workdir  empty folder for data and runs, kept (default: a new temporary folder,
             removed at the end unless --keep or a failure)
  --levels   precision levels cycled across chaos runs (default O2,fp32,bf16,O1)
  --jobs     concurrent verification processes (default 2)

  CI mode (seconds on 2 cores):
      python3 scripts/chaos.py --binary build/fp8lm --kills 6 --steps 6
  Long mode (acceptance, at least 50 kills):
      python3 scripts/chaos.py --kills 60

The summary line (R counts the resumes of chaos runs):
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
    tokens = array("H", list(data))
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


class Segment:
    """One process of a run, started and either killed or waited for."""

    def __init__(self, returncode, killed, elapsed, logf, new_times, tmp_new, new_lines):
        self.returncode = returncode
        self.killed = killed
        self.elapsed = elapsed  # seconds from start to kill or exit
        self.logf = logf
        self.new_times = new_times  # step -> seconds at which a new complete checkpoint appeared
        self.tmp_new = tmp_new  # temporary checkpoint folders present after it, not before
        self.new_lines = new_lines  # metrics lines present after it, not before


def metrics_lines(run_dir):
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            return set(f.read().splitlines())
    except FileNotFoundError:
        return set()


class Chaos:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.binary = str(Path(args.binary).resolve())
        self.rng = random.Random(args.seed)
        self.train_bin, self.val_bin = make_corpus(work)
        self.refs = {}  # level -> reference facts
        self.timing = {}  # level -> {"period": [..], "fresh": [..], "resume": [..]} seconds
        self.ref_eval = {}  # (level, step) -> eval loss text
        self.ref_digest = {}  # (level, step, file) -> sha256
        self.kills = 0
        self.ckpt_kills = 0
        self.startup_kills = 0
        self.aimed_kills = 0  # right after a checkpoint appeared
        self.verified = 0
        self.corrupted = 0
        self.lost = 0
        self.resumes = 0  # of chaos runs
        self.ref_resumes = 0  # reference checkpoints continued in a new folder
        self.failed_resumes = 0
        self.restarts = 0
        self.completed_runs = 0
        self.exact_runs = 0
        self.inexact_runs = 0
        self.errors = []  # messages of every failure
        self.leftovers = []  # completed run folders holding files of interrupted writes
        self.run_counter = 0
        self.segment_counter = 0
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))

    # -- commands

    def train_cmd(self, level, run_dir, resume):
        """`resume`: None (fresh run) or the checkpoint or run folder to continue."""
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
        if resume is not None:
            cmd += ["--resume", str(resume)]
        return cmd

    def run_segment(self, cmd, tag, run_dir, kill_at, kill_on_step=None):
        """Starts `cmd` and kills it (SIGKILL) `kill_at` seconds after the start, or as soon
        as checkpoint step-`kill_on_step` appears (if it does before), or, with kill_at None,
        waits for it. Watches run_dir/checkpoints meanwhile to time the run."""
        self.segment_counter += 1
        logf = self.work / "logs" / f"{self.segment_counter:04d}-{tag}.log"
        logf.parent.mkdir(exist_ok=True)
        before, tmp_before = checkpoint_names(run_dir)
        lines_before = metrics_lines(run_dir)
        with open(logf, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                 stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        deadline = t0 + (kill_at if kill_at is not None else PROC_TIMEOUT)
        new_times = {}
        killed = False
        while p.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                # Not yet reaped, so the pid is still this child's even if it just exited.
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                if kill_at is None:
                    raise Failure(f"{' '.join(cmd)} did not finish in {PROC_TIMEOUT} s "
                                  f"(log {logf})")
                killed = p.returncode == -signal.SIGKILL
                break
            complete, _ = checkpoint_names(run_dir)
            for step in complete.keys() - before.keys():
                new_times.setdefault(step, now - t0)
            if kill_on_step in complete:
                deadline = now
                continue
            time.sleep(max(0.0, min(0.003 if kill_on_step is None else 0.0002, deadline - now)))
        elapsed = time.monotonic() - t0
        complete, tmp = checkpoint_names(run_dir)
        for step in complete.keys() - before.keys():
            new_times.setdefault(step, elapsed)
        return Segment(p.returncode, killed, elapsed, logf, new_times, tmp - tmp_before,
                       metrics_lines(run_dir) - lines_before)

    @staticmethod
    def tail(logf, lines=6):
        try:
            text = Path(logf).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    # -- timing

    def observe(self, level, kind, seg):
        """Learns start-up time (`kind`: fresh or resume) and step period from the moments
        new checkpoints appeared during a segment."""
        t = self.timing[level]
        times = sorted(seg.new_times.values())
        if len(times) >= 2:
            t["period"].append(max((times[-1] - times[0]) / (len(times) - 1), 0.002))
        if times:
            t[kind].append(max(times[0] - self.estimate(level, "period"), 0.002))

    def estimate(self, level, what):
        """Median of the last few observations."""
        xs = sorted(self.timing[level][what][-7:])
        return xs[len(xs) // 2]

    def kill_plan(self, level, kind, latest):
        """(delay, step): one kill in eight waits for a checkpoint to appear (one of the next
        three) and lands right after its rename; the others are drawn by kill_delay."""
        if self.rng.random() < 0.125 and latest < self.args.steps:
            step = self.rng.randint(latest + 1, min(self.args.steps, latest + 3))
            wait = self.estimate(level, kind) + (step - latest + 2) * self.estimate(level, "period")
            return 4.0 * wait, step
        return self.kill_delay(level, kind), None

    def kill_delay(self, level, kind):
        """Uniform over start-up plus three step periods (checkpoint writes included), or
        (one in eight) over the start-up alone."""
        startup = self.estimate(level, kind)
        if self.rng.random() < 0.125:
            return self.rng.uniform(0.0, startup)
        return self.rng.uniform(0.0, startup + 3.0 * self.estimate(level, "period"))

    # -- reference

    def reference(self, level):
        if level in self.refs:
            return self.refs[level]
        S = self.args.steps
        run_dir = self.work / f"ref-{level}"
        seg = self.run_segment(self.train_cmd(level, run_dir, None), f"ref-{level}", run_dir,
                               None)
        if seg.returncode != 0:
            raise Failure(f"reference run {level} failed with exit {seg.returncode}: "
                          f"{self.tail(seg.logf)} (log {seg.logf})")
        steps, vals = read_metrics(run_dir / "metrics.jsonl")
        if [s for s, _ in steps] != list(range(1, S + 1)):
            raise Failure(f"reference run {level}: metrics steps {[s for s, _ in steps]}, "
                          f"expected 1..{S}")
        bad = [s for s, x in steps + vals if not finite_text(x)]
        if bad:
            raise Failure(f"reference run {level}: non-finite loss at steps {bad}")
        complete, _ = checkpoint_names(run_dir)
        if sorted(complete) != list(range(1, S + 1)):
            raise Failure(f"reference run {level}: checkpoints {sorted(complete)}, "
                          f"expected 1..{S}")
        ref = {"dir": run_dir, "steps": steps, "vals": vals}
        self.refs[level] = ref
        self.timing[level] = {"period": [seg.elapsed / (S + 1)], "fresh": [seg.elapsed / (S + 1)],
                              "resume": []}
        self.observe(level, "fresh", seg)
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
        # Resume start-up time: continue the reference's step-1 in a new folder (which must
        # log the reference's losses of steps 2..S).
        resumed = self.work / f"ref-{level}-from-step-1"
        seg2 = self.run_segment(self.train_cmd(level, resumed, run_dir / "checkpoints" / "step-1"),
                                f"ref-{level}-resume", resumed, None)
        self.ref_resumes += 1
        self.timing[level]["resume"].append(self.estimate(level, "fresh"))
        if seg2.returncode != 0:
            self.failed_resumes += 1
            self.error(f"resume of {run_dir}/checkpoints/step-1 into {resumed} exited "
                       f"{seg2.returncode}: {self.tail(seg2.logf)} (log {seg2.logf})")
        else:
            self.observe(level, "resume", seg2)
            self.check_completed(level, resumed, seg2, first_step=2)
        log(f"reference {level}: {S} steps in {seg.elapsed:.2f} s (start-up "
            f"{self.estimate(level, 'fresh') * 1e3:.0f} ms fresh, "
            f"{self.estimate(level, 'resume') * 1e3:.0f} ms resumed; step + checkpoint "
            f"{self.estimate(level, 'period') * 1e3:.0f} ms), final loss {steps[-1][1]}")
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
        """Verifies every complete checkpoint of run_dir; returns their steps."""
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

    def check_completed(self, level, run_dir, seg, first_step=1):
        """A completed run's metrics.jsonl: steps first_step..S once each, in order, with the
        reference's losses and validation lines, exactly; and its summary.json."""
        ref = self.refs[level]
        S = self.args.steps
        try:
            steps, vals = read_metrics(run_dir / "metrics.jsonl")
        except (Failure, OSError) as e:
            self.inexact_runs += 1
            self.error(f"run {run_dir}: {e}")
            return False
        problems = []
        got = [s for s, _ in steps]
        if got != list(range(first_step, S + 1)):
            problems.append(f"metrics steps {got}, expected {first_step}..{S} once each in order")
        want = {s: x for s, x in ref["steps"]}
        diffs = [(s, x, want.get(s)) for s, x in steps if x != want.get(s)]
        if diffs:
            s, x, r = diffs[0]
            problems.append(f"{len(diffs)} losses differ from the reference's, first at step "
                            f"{s}: {x} vs {r}")
        if vals != ref["vals"]:
            problems.append(f"validation lines {vals}, the reference's {ref['vals']}")
        if problems:
            self.inexact_runs += 1
            self.error(f"completed run {run_dir} ({level}; last log {seg.logf}): "
                       + "; ".join(problems))
            return False
        if first_step == 1:
            self.exact_runs += 1
        # summary.json: present, with the final losses of the metrics.
        try:
            with open(run_dir / "summary.json", encoding="utf-8") as f:
                summary = json.load(f, parse_float=str)
        except (OSError, ValueError) as e:
            self.error(f"completed run {run_dir} ({level}): summary.json: {e} "
                       f"(last log {seg.logf}: {self.tail(seg.logf, 2)})")
            return False
        final = (summary.get("final_train_loss"), summary.get("final_val_loss"))
        want_final = (ref["steps"][-1][1], ref["vals"][-1][1] if ref["vals"] else None)
        if final != want_final:
            self.error(f"completed run {run_dir} ({level}): summary.json has final losses "
                       f"{final}, the metrics say {want_final} (last log {seg.logf})")
            return False
        return True

    def note_leftovers(self, run_dir):
        """Files of interrupted writes still in a completed run folder (garbage, not an
        error: reported in the summary)."""
        expected = {".lock", "config.toml", "metrics.jsonl", "summary.json", "checkpoints"}
        extra = sorted(n for n in os.listdir(run_dir) if n not in expected)
        complete, tmp = checkpoint_names(run_dir)
        extra += sorted(f"checkpoints/{n}" for n in os.listdir(run_dir / "checkpoints")
                        if n not in complete.values())
        if extra:
            self.leftovers.append(f"{run_dir.name}: {' '.join(extra)}")

    def error(self, msg):
        self.errors.append(msg)
        log("  FAIL: " + msg)

    # -- the chaos loop

    def chaos(self):
        levels = self.args.levels
        run_index = 0
        while self.kills < self.args.kills:
            level = levels[run_index % len(levels)]
            run_index += 1
            self.chaos_run(level)
        self.pool.shutdown()

    def new_run_dir(self, level):
        self.run_counter += 1
        return self.work / f"chaos-{self.run_counter:03d}-{level}"

    def chaos_run(self, level):
        """One chaos run: a fresh start, then kills and resumes until it completes (kills
        stop once --kills have happened; the last resume then runs to the end)."""
        K = self.args.kills
        self.reference(level)
        run_dir = self.new_run_dir(level)
        resume = False
        known = set()  # complete checkpoints of run_dir after the last segment
        while True:
            kind = "resume" if resume else "fresh"
            kill_at, kill_on = (self.kill_plan(level, kind, max(known, default=0))
                                if self.kills < K else (None, None))
            seg = self.run_segment(self.train_cmd(level, run_dir, run_dir if resume else None),
                                   f"{run_dir.name}-{kind}", run_dir, kill_at, kill_on)
            if resume:
                self.resumes += 1
            self.observe(level, kind, seg)
            if not seg.killed and seg.returncode != 0:
                if resume:
                    self.failed_resumes += 1
                self.error(f"{kind} run of {run_dir} exited {seg.returncode}: "
                           f"{self.tail(seg.logf)} (log {seg.logf})")
                return
            complete, _ = checkpoint_names(run_dir)
            gone = known - complete.keys()
            if gone:
                self.lost += len(gone)
                self.error(f"{run_dir}: complete checkpoints {sorted(gone)} disappeared "
                           f"(log {seg.logf})")
            if not seg.killed:  # completed
                self.verify_all(level, run_dir, f"completed run, log {seg.logf}")
                if resume:  # it must have continued from the latest checkpoint
                    m = re.search(r"resumed from \S+ at step (\d+)",
                                  Path(seg.logf).read_text(errors="replace"))
                    if m and int(m.group(1)) != max(known):
                        self.failed_resumes += 1
                        self.error(f"{run_dir}: resumed at step {m.group(1)}, latest complete "
                                   f"checkpoint was step-{max(known)} (log {seg.logf})")
                self.completed_runs += 1
                exact = self.check_completed(level, run_dir, seg)
                self.note_leftovers(run_dir)
                log(f"run {run_dir.name} completed ({'resumed' if resume else 'never killed'}): "
                    f"{'bit-exact' if exact else 'FAILED'}")
                return
            self.kills += 1
            in_write = bool(seg.tmp_new)
            in_startup = not (seg.tmp_new or seg.new_times or seg.new_lines)
            self.ckpt_kills += in_write
            self.startup_kills += in_startup
            aimed = kill_on is not None and kill_on in complete
            self.aimed_kills += aimed
            where = ("during a checkpoint write" if in_write else
                     f"right after step-{kill_on} appeared" if aimed else
                     "before the first step" if in_startup else "")
            log(f"kill {self.kills}/{K}: {run_dir.name} {kind} at {seg.elapsed * 1e3:.0f} ms, "
                f"latest step-{max(complete) if complete else 0}" + (f", {where}" if where else ""))
            known = self.verify_all(level, run_dir, f"after kill {self.kills} at "
                                    f"{seg.elapsed:.3f} s, log {seg.logf}")
            if known:
                resume = True
            else:  # killed before its first checkpoint: nothing to resume; start afresh
                self.restarts += 1
                run_dir = self.new_run_dir(level)
                resume = False

    def summary(self):
        exact = self.inexact_runs == 0 and self.completed_runs > 0
        log(f"chaos: {self.completed_runs} chaos runs completed ({self.exact_runs} bit-exact), "
            f"{self.ref_resumes} reference checkpoints continued in a new folder, "
            f"{self.startup_kills} kills before a process's first step, {self.aimed_kills} right "
            f"after a checkpoint appeared, {self.restarts} fresh "
            f"restarts (killed before the first checkpoint), {self.lost} checkpoints lost")
        if self.leftovers:
            log(f"chaos: note: {len(self.leftovers)} completed run folders keep files of "
                f"interrupted writes: " + "; ".join(self.leftovers))
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
