#!/usr/bin/env python3
"""Hostile-input harness for fp8lm: one command, many hostile cases, three failure counts.

Every case runs the fp8lm binary on something hostile (a mutated checkpoint, a bad
configuration value, a FIFO where a file should be, two runs writing one folder, ranks that
disagree, ...) in its own temporary folder and judges the result against the case's
explicit expectation:

  must_refuse        the input is invalid: the only right answer is a good refusal
  may_accept_finite  the input is merely different: a good refusal, or exit 0 with every
                     printed/recorded loss finite
  may_accept         as may_accept_finite, without the finiteness test (inspect/convert
                     show NaN values as they are)
  must_accept_finite a control: exit 0 with finite losses (checks the harness itself)

A good refusal is a non-zero exit (1 or 2) with exactly one line on stderr, starting
"fp8lm: error:" (README, "Command line"); some cases also want the line to name a file.

Failures are counted as
  crash    killed by a signal, exit code >= 128, a sanitizer or heap-corruption report,
           "internal error" on stderr, or memory running away (RSS above --mem-limit-mib)
  hang     no exit within the timeout (then killed)
  silent   silent acceptance: exit 0 where the input must be refused, or a NaN/inf loss
           printed or recorded with exit 0 (also: two writers both accepted)
  poor     a refusal that is not one "fp8lm: error:" line, does not name what it must, is
           an internal check failure, or comes after training steps already ran
  false    a valid control input refused
  unsupported  the binary does not know an option the case needs yet (not a pass)

Usage:
  python3 scripts/hostile.py [--binary PATH] [--quick] [--class NAME] [--case SUBSTR]
                             [--timeout S] [--case-timeout S] [--jobs N] [--workdir DIR]
                             [--keep] [--list] [--report FILE.json] [--mem-limit-mib N]
                             [--verbose]

Classes: trainer_json, safetensors, config, tokens, run_dir, env, mpi. Full mode runs
about 3100 cases in about 2 minutes on 2 cores against a binary that refuses them well
(longer when cases train); --quick about 220 in about 20 s. Cases
that only open or parse a file use min(--timeout, 20 s). Copy the binary first when
build/ may be rebuilt during a run.

The run cannot stall silently: --timeout bounds each process, and a watchdog bounds each
whole case (--case-timeout, default max(300, 4 x --timeout + 60) s): a case past it is
recorded as a hang ("harness watchdog", with where its thread was), its processes are
killed and the run moves on. Should the harness itself freeze (one thread holding the
GIL), faulthandler prints every thread's stack every 120 s. Output is matched with
linear-time patterns on lines cut to 4096 characters: a quadratic pattern on a 100 KB
refusal line once froze a full run for good.

Output: one line per failing case (kind, class, case, what happened), then
  hostile: N cases, C crashes, H hangs, S silent acceptances, P poor refusals, ...
and exit status 1 when anything failed. Standard library only.
"""

import argparse
import copy
import faulthandler
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Expectations.
MUST_REFUSE = "must_refuse"
MAY_ACCEPT = "may_accept_finite"
MAY_ACCEPT_ANY = "may_accept"
MUST_ACCEPT = "must_accept_finite"

# Outcome kinds.
PASS, SKIP = "pass", "skip"
CRASH, HANG, SILENT, POOR, FALSE, UNSUPPORTED = (
    "crash", "hang", "silent", "poor", "false", "unsupported")
FAIL_KINDS = (CRASH, HANG, SILENT, POOR, FALSE, UNSUPPORTED)
KIND_WORDS = {CRASH: ("crash", "crashes"), HANG: ("hang", "hangs"),
              SILENT: ("silent acceptance", "silent acceptances"),
              POOR: ("poor refusal", "poor refusals"), FALSE: ("false refusal", "false refusals"),
              UNSUPPORTED: ("not yet supported", "not yet supported")}

CLASSES = ("trainer_json", "safetensors", "config", "tokens", "run_dir", "env", "mpi")

# Small model, as the brief's command line. Steps/out_dir/data are filled per case.
SEQ, BATCH, STEPS = 32, 4, 4
TOKEN_MAGIC, TOKEN_VERSION = 20240520, 1
MODEL_VOCAB = 512  # the tiny preset's vocabulary (byte tokenizer ids are < 257)

FAST_TIMEOUT = 20.0  # cases that need no computation (a FIFO, a parse) answer in far less
STALL_DUMP_S = 120.0  # no scheduler tick for this long: print every thread's stack
TICK_MAX_S = 2.0  # case watchdog: at most this much of one scheduler tick is charged
FROZEN_WARN_S = 10.0  # a scheduler tick this long means the harness itself was frozen

FSIZE_WRAPPER = (
    "import os, resource, signal, sys\n"
    "n = int(sys.argv[1])\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


class Outcome:
    def __init__(self, kind, detail=""):
        self.kind, self.detail = kind, detail


def ok():
    return Outcome(PASS)


# --------------------------------------------------------------------------------------
# Processes: each case's processes run in their own session; a watchdog kills the session
# on timeout or runaway memory; stray members are killed by pid when the leader exits.


def session_members(sid):
    """(pid, rss_bytes) of every process in session sid."""
    out = []
    page = os.sysconf("SC_PAGE_SIZE")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(b")") + 2:].split()
        try:
            if int(rest[3]) == sid:
                out.append((int(name), int(rest[21]) * page))
        except (IndexError, ValueError):
            continue
    return out


def children_of(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


class Proc:
    """One started process (and its session)."""

    def __init__(self, h, argv, cwd, tag, env_extra=None, env_drop=(), timeout=None,
                 stdout_path=None, actions=(), fsize_limit=None):
        self.h, self.argv, self.cwd, self.tag = h, argv, cwd, tag
        if fsize_limit is not None:
            # A disk that fills: writes past fsize_limit bytes (per file) fail with EFBIG
            # instead of raising SIGXFSZ. Set in a small exec wrapper (exact bytes, no shell).
            argv = [sys.executable, "-c", FSIZE_WRAPPER, str(fsize_limit)] + list(argv)
        self.timeout = timeout or h.timeout
        self.actions = list(actions)  # (delay_s, fn(proc)) run once while it runs
        self.action_log = []
        env = dict(h.base_env)
        for k in env_drop:
            env.pop(k, None)
        env.update(env_extra or {})
        self.out_path = stdout_path or os.path.join(cwd, tag + ".out")
        self.err_path = os.path.join(cwd, tag + ".err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  stdout=self._out, stderr=self._err, start_new_session=True)
        self.pid = self.p.pid
        self.case = h.track(self)  # so the case watchdog can end it
        self.rc = None
        self.timed_out = self.mem_killed = False
        self.peak_rss = 0
        self.stdout = self.stderr = ""

    def alive(self):
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def _kill_session(self):
        for pid, _ in session_members(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def wait(self):
        deadline = self.t0 + self.timeout
        next_mem = 0.0
        while self.alive():
            now = time.monotonic()
            for a in list(self.actions):
                if now - self.t0 >= a[0]:
                    self.actions.remove(a)
                    try:
                        self.action_log.append(a[1](self))
                    except Exception as e:  # an action must not kill the harness
                        self.action_log.append("action failed: %r" % e)
            if now >= deadline:
                self.timed_out = True
                self._kill_session()
                break
            if now >= next_mem:
                next_mem = now + 0.5
                rss = sum(r for _, r in session_members(self.pid))
                self.peak_rss = max(self.peak_rss, rss)
                if rss > self.h.mem_limit:
                    self.mem_killed = True
                    self._kill_session()
                    break
            time.sleep(0.02)
        # Leader exited (still a zombie, so its pid is not reused): end stray members too.
        self._kill_session()
        self.h.untrack(self)  # before the reap: a reaped leader's pid may be reused
        self.rc = self.p.wait()
        self.elapsed = time.monotonic() - self.t0
        self._out.close()
        self._err.close()
        self.stdout = read_text(self.out_path) if stdout_path_is_file(self.out_path) else ""
        self.stderr = read_text(self.err_path)
        return self


def stdout_path_is_file(path):
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_text(path, limit=4 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------
# Judging.

# Crash signatures in stderr. Every pattern starts with literal text (no leading [^\n]* or
# [^\s:]+): Python's re engine holds the GIL for a whole search, and such a prefix makes a
# search quadratic in the line length -- a 100 KB one-line refusal (a 100000-character key
# echoed back) then stalled every thread of the harness for many minutes. A match is
# reported from its start ("from") or as its whole line ("line"); lines are also cut to
# MATCH_LINE_MAX characters before matching, so no pattern can take long on any output.
MATCH_LINE_MAX = 4096
SAN_PATTERNS = [
    (re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer"), "from"),
    (re.compile(r":\d+:\d+: runtime error:"), "ubsan"),  # path:line:col: runtime error: ...
    (re.compile(r"SUMMARY: \w+Sanitizer"), "from"),
    (re.compile(r"double free or corruption|free\(\): |malloc\(\): |"
                r"corrupted size vs\. prev_size|corrupted double-linked list|"
                r"\*\*\* stack smashing detected|terminate called"), "from"),
    (re.compile(r"exited on signal \d+"), "line"),
    (re.compile(r"Segmentation fault|Bus error|Floating point exception"), "line"),
    (re.compile(r"internal error"), "line"),
]


def match_text(text):
    """text with every line cut to MATCH_LINE_MAX characters (linear time)."""
    if len(text) <= MATCH_LINE_MAX:
        return text
    return "\n".join(l[:MATCH_LINE_MAX] for l in text.split("\n"))


def crash_signature(text):
    """The first crash signature in text (a line or its tail), or None."""
    text = match_text(text)
    for rx, how in SAN_PATTERNS:
        for m in rx.finditer(text):
            ls = text.rfind("\n", 0, m.start()) + 1
            le = text.find("\n", m.end())
            le = len(text) if le < 0 else le
            if how == "ubsan":
                head = text[ls:m.start()]
                if not head or head[-1].isspace() or head[-1] == ":":
                    continue  # UBSan prefixes a file name: [^\s:]+:L:C: runtime error:
                ws = max(head.rfind(" "), head.rfind("\t"), head.rfind(":"))
                ls += ws + 1
            elif how == "from":
                ls = m.start()
            return text[ls:le]
    return None


def short(s, n=220):
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def signame(n):
    try:
        return signal.Signals(n).name
    except ValueError:
        return "signal %d" % n


def crash_reason(p):
    if p.mem_killed:
        return "memory ran away (RSS %d MiB > %d MiB), killed" % (
            p.peak_rss >> 20, p.h.mem_limit >> 20)
    sig = crash_signature(p.stderr)
    if sig:
        return short(sig)
    if p.rc < 0:
        return "killed by %s" % signame(-p.rc)
    if p.rc >= 128:
        return "exit code %d" % p.rc
    return None


def err_lines(p):
    return [l for l in p.stderr.splitlines() if l.strip()]


def refusal_problem(p, mention=None, mpi=False):
    """None for a good refusal, else what is wrong with it."""
    lines = err_lines(p)
    if not lines:
        return "exit %d with nothing on stderr" % p.rc
    if "check failed:" in p.stderr:
        l = next(l for l in lines if "check failed:" in l)
        return "internal check reached: " + short(l)
    if mpi:
        errs = [l for l in lines if l.startswith("fp8lm:") and "error" in l]
        if not errs:
            return "no fp8lm error line: " + short(lines[0])
        text = "\n".join(errs)
    else:
        if len(lines) != 1:
            return "%d lines on stderr, first: %s | last: %s" % (
                len(lines), short(lines[0], 100), short(lines[-1], 160))
        if not lines[0].startswith("fp8lm: error:"):
            return "stderr does not start with 'fp8lm: error:': " + short(lines[0])
        if p.rc not in (1, 2):
            return "exit %d (1 or 2 expected): %s" % (p.rc, short(lines[0]))
        text = lines[0]
    if mention:
        pats = [mention] if isinstance(mention, str) else list(mention)
        if not any(re.search(m, text, re.I) for m in pats):
            return "error does not name %s: %s" % (pats[0], short(text))
    return None


def first_err(p):
    lines = err_lines(p)
    return short(lines[0], 160) if lines else "(no stderr)"


def judge(p, expect, finite=None, mention=None, mpi=False):
    """Outcome of one process against an expectation. finite(p) -> None or a problem."""
    if p.timed_out:
        return Outcome(HANG, "no exit within %.0f s, killed" % p.timeout)
    c = crash_reason(p)
    if c:
        return Outcome(CRASH, c)
    if p.rc == 0:
        if expect == MUST_REFUSE:
            what = finite(p) if finite else None
            tail = [l for l in p.stdout.splitlines() if l.strip()]
            return Outcome(SILENT, "exit 0" + (": " + what if what else
                                               (": " + short(tail[-1], 120) if tail else "")))
        if expect in (MAY_ACCEPT, MUST_ACCEPT) and finite:
            bad = finite(p)
            if bad:
                return Outcome(SILENT, "exit 0 with " + bad)
        return ok()
    if expect == MUST_ACCEPT:
        return Outcome(FALSE, "exit %d: %s" % (p.rc, first_err(p)))
    bad = refusal_problem(p, mention, mpi)
    return Outcome(POOR, bad) if bad else ok()


def nonfinite(v):
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def eval_finite(p):
    m = re.search(r'"loss"\s*:\s*([^\s},]+)', p.stdout)
    if not m:
        return "no loss printed"
    try:
        v = float(m.group(1))
    except ValueError:
        return "loss %s" % m.group(1)
    return None if math.isfinite(v) else "loss %s" % m.group(1)


def metrics_lines(run_dir):
    rows = []
    text = read_text(os.path.join(run_dir, "metrics.jsonl"))
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            rows.append({"unparsable": line})
    return rows


def train_finite(run_dir, after_step=0):
    """Finiteness of what a training run printed and recorded (steps > after_step)."""

    def check(p):
        for r in metrics_lines(run_dir):
            if "unparsable" in r:
                return "unparsable metrics line %s" % short(r["unparsable"], 60)
            if r.get("step", 0) <= after_step:
                continue
            for k in ("loss", "val_loss"):
                if k in r and nonfinite(r[k]):
                    return "%s %s at step %s in metrics.jsonl" % (k, r[k], r.get("step"))
        try:
            with open(os.path.join(run_dir, "summary.json")) as f:
                s = json.load(f)
            for k in ("final_train_loss", "final_val_loss"):
                if k in s and nonfinite(s[k]):
                    return "%s %s in summary.json" % (k, s[k])
        except (OSError, ValueError):
            pass
        m = re.search(r"(loss|val)[ :]+(-?nan|-?inf)\b", p.stdout, re.I)
        if m:
            return "'%s' printed" % m.group(0)
        return None

    return check


# --------------------------------------------------------------------------------------
# Files: token files, JSON with raw tokens, safetensors.


def token_file_bytes(tokens, count=None, magic=TOKEN_MAGIC, version=TOKEN_VERSION):
    hdr = [magic, version, len(tokens) if count is None else count] + [0] * 253
    hdr = [((v + 2**31) % 2**32) - 2**31 for v in hdr]  # wrap into int32
    return struct.pack("<256i", *hdr) + struct.pack("<%dH" % len(tokens), *tokens)


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def english_text(nbytes, shift=0):
    s = [
        "The old farmer walked along the river to the mill before the sun came up.",
        "A small boat drifted across the quiet lake while the children watched from the shore.",
        "She opened the letter, read it twice, and put it back into the drawer by the window.",
        "In the evening the town was quiet, and the lamps were lit one by one along the street.",
        "He said that the train would leave at nine, but nobody at the station believed him.",
        "The teacher wrote the numbers on the board and asked the class to add them together.",
        "Rain fell all night on the roof of the barn, and the horses stood close to the wall.",
        "They built a fire on the beach and told stories until the stars came out over the sea.",
    ]
    out, i, total = [], shift, 0  # a running total: re-summing made big.bin take seconds
    while total < nbytes:
        out.append(s[i % len(s)])
        total += len(out[-1]) + 1
        i += 3 if i % 2 else 1
    return " ".join(out)[:nbytes]


class Raw:
    """JSON text emitted verbatim (1e999, NaN tokens, ...)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


DELETE = object()


def jdump(v):
    if isinstance(v, Raw):
        return v.text
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "1e999" if v > 0 else "-1e999"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ",".join(jdump(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k) + ":" + jdump(x) for k, x in v.items()) + "}"
    raise TypeError(type(v))


def expand(doc, path):
    """Concrete paths for a path with '*' (every element) and negative indices."""
    if not path:
        yield ()
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for i in range(len(doc)):
            for p in expand(doc[i], rest):
                yield (i,) + p
    elif isinstance(head, int):
        i = head if head >= 0 else len(doc) + head
        for p in expand(doc[i], rest):
            yield (i,) + p
    else:
        if rest:
            for p in expand(doc[head], rest):
                yield (head,) + p
        else:
            yield (head,)


def set_path(doc, path, value):
    for cp in list(expand(doc, path)):
        d = doc
        for k in cp[:-1]:
            d = d[k]
        old = d[cp[-1]] if (isinstance(d, list) or cp[-1] in d) else None
        v = value(old, d) if callable(value) else value
        if v is DELETE:
            del d[cp[-1]]
        else:
            d[cp[-1]] = copy.deepcopy(v)


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return data, n, header


def st_write(path, header, body):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 64)
    write(path, struct.pack("<Q", len(text)) + text + body)


def st_tensors(header):
    """Tensor names in file order."""
    names = [k for k in header if k != "__metadata__"]
    return sorted(names, key=lambda k: header[k]["data_offsets"][0])


# --------------------------------------------------------------------------------------
# Cases.


class Case:
    def __init__(self, cls, name, fn, quick=False, heavy=False, expect="", fast=False):
        self.cls, self.name, self.fn = cls, name, fn
        self.quick, self.heavy, self.expect, self.fast = quick, heavy, expect, fast


def safe_name(s):
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", s)[:120]


class Harness:
    def __init__(self, args):
        self.binary = os.path.abspath(args.binary)
        self.timeout = float(args.timeout)
        self.fast_timeout = min(self.timeout, FAST_TIMEOUT)
        self.mem_limit = int(args.mem_limit_mib) << 20
        self.workdir = args.workdir
        self.keep = args.keep
        self.verbose = args.verbose
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith(("FP8LM_", "OMPI_", "PMIX_", "OMP_"))}
        self.base_env["OMP_NUM_THREADS"] = "1"
        self.base_env.setdefault("ASAN_OPTIONS", "hard_rss_limit_mb=%d" % (self.mem_limit >> 20))
        self.base_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self._fix_lock = threading.RLock()
        self._fixtures = {}
        self.mpirun = shutil.which("mpirun")
        self._tls = threading.local()  # .case: index of the case this thread runs
        self._live_lock = threading.Lock()
        self._live = {}  # case index -> set of started, not yet reaped Procs

    # -- process tracking for the case watchdog --

    def track(self, proc):
        case = getattr(self._tls, "case", None)
        with self._live_lock:
            self._live.setdefault(case, set()).add(proc)
        return case

    def untrack(self, proc):
        with self._live_lock:
            self._live.get(proc.case, set()).discard(proc)

    def kill_case(self, case):
        """Kills every process session a case started (its waits then return)."""
        with self._live_lock:
            procs = list(self._live.get(case, ()))
        for p in procs:
            p._kill_session()
        return len(procs)

    # -- fixtures (made once, on first use) --

    def fixture(self, name):
        with self._fix_lock:
            if name not in self._fixtures:
                self._fixtures[name] = getattr(self, "_make_" + name)()
            return self._fixtures[name]

    def _make_tokens(self):
        d = os.path.join(self.workdir, "fixtures")
        os.makedirs(d, exist_ok=True)
        train = [256] + list(english_text(40000).encode())
        val = [256] + list(english_text(8000, shift=5).encode())
        write(os.path.join(d, "train.bin"), token_file_bytes(train))
        write(os.path.join(d, "val.bin"), token_file_bytes(val))
        big = [256] + list(english_text(600000, shift=2).encode())
        write(os.path.join(d, "big.bin"), token_file_bytes(big))
        return {"dir": d, "train": os.path.join(d, "train.bin"),
                "val": os.path.join(d, "val.bin"), "big": os.path.join(d, "big.bin"),
                "train_tokens": train, "val_tokens": val}

    def _make_ref(self):
        """One tiny O2 run (4 steps, checkpoints at 2 and 4) whose files the cases mutate."""
        t = self.fixture("tokens")
        run = os.path.join(self.workdir, "fixtures", "ref")
        p = Proc(self, [self.binary, "train"] + self.sets(t["train"], t["val"], run),
                 os.path.join(self.workdir, "fixtures"), "ref", timeout=max(self.timeout, 120)).wait()
        ck = os.path.join(run, "checkpoints", "step-2")
        if p.rc != 0 or not os.path.isfile(os.path.join(ck, "trainer.json")):
            raise HarnessError("reference run failed (exit %s): %s" % (p.rc, short(p.stderr, 400)))
        with open(os.path.join(ck, "trainer.json")) as f:
            tj = json.load(f)
        _, _, oh = st_read(os.path.join(ck, "optimizer.safetensors"))
        _, _, mh = st_read(os.path.join(ck, "model.safetensors"))
        return {"run": run, "ckpt": ck, "ckpt4": os.path.join(run, "checkpoints", "step-4"),
                "trainer": tj, "window": tj["fp8"]["amax_window"], "opt_header": oh,
                "model_header": mh, "seconds": p.elapsed}

    # -- helpers for cases --

    def sets(self, train, val, out, steps=STEPS, extra=()):
        kv = [("model.preset", "tiny"), ("model.seq_len", SEQ), ("data.tokenizer", "byte"),
              ("train.batch_size", BATCH), ("train.steps", steps), ("train.eval_every", 2),
              ("train.eval_batches", 1), ("train.checkpoint_every", 2), ("train.threads", 1),
              ("data.train", json.dumps(train)), ("data.val", json.dumps(val)),
              ("train.out_dir", json.dumps(out))]
        args = []
        for k, v in kv:
            args += ["--set", "%s=%s" % (k, v)]
        for e in extra:
            args += ["--set", e]
        return args

    def train_argv(self, d, out="run", train=None, val=None, steps=STEPS, extra=()):
        t = self.fixture("tokens")
        return [self.binary, "train"] + self.sets(
            train or t["train"], val or t["val"], os.path.join(d, out), steps, extra)

    def copy_ckpt(self, d, name="ckpt", step=2):
        ref = self.fixture("ref")
        dst = os.path.join(d, name)
        shutil.copytree(ref["ckpt"] if step == 2 else ref["ckpt4"], dst)
        return dst

    def copy_run(self, d, name="run", steps=(2,)):
        """A copy of the reference run folder holding only the listed checkpoints."""
        ref = self.fixture("ref")
        dst = os.path.join(d, name)
        os.makedirs(os.path.join(dst, "checkpoints"))
        for f in ("config.toml", "metrics.jsonl"):
            shutil.copy(os.path.join(ref["run"], f), dst)
        for s in steps:
            shutil.copytree(os.path.join(ref["run"], "checkpoints", "step-%d" % s),
                            os.path.join(dst, "checkpoints", "step-%d" % s))
        return dst

    def run(self, argv, d, tag="p", **kw):
        return Proc(self, argv, d, tag, **kw).wait()

    def eval_argv(self, ckpt, data=None, batches=1, extra=()):
        return [self.binary, "--threads", "1", "eval", "--checkpoint", ckpt,
                "--data", data or self.fixture("tokens")["val"], "--batches", str(batches)] + list(extra)

    def sample_argv(self, ckpt):
        return [self.binary, "--threads", "1", "sample", "--checkpoint", ckpt, "--tokens", "4"]

    def resume_argv(self, d, run, ckpt):
        t = self.fixture("tokens")
        return [self.binary, "train"] + self.sets(t["train"], t["val"], run) + ["--resume", ckpt]

    def checkpoint_cmd(self, cmd, d, ckpt, run=None, expect=MUST_REFUSE, mention=None, fast=False):
        """Runs eval / sample / resume / inspect / convert on a (mutated) checkpoint copy."""
        to = self.fast_timeout if fast else None
        if cmd == "eval":
            p = self.run(self.eval_argv(ckpt), d, "eval", timeout=to)
            return judge(p, expect, eval_finite, mention)
        if cmd == "sample":
            p = self.run(self.sample_argv(ckpt), d, "sample", timeout=to)
            return judge(p, expect, None, mention)
        if cmd == "resume":
            p = self.run(self.resume_argv(d, run, ckpt), d, "resume", timeout=to)
            return judge(p, expect, train_finite(run, after_step=2), mention)
        raise ValueError(cmd)


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------------------
# Class 1: trainer.json mutations.

CKPT_CMDS = ("eval", "sample", "resume")

GENERIC = {
    "int": [("delete", DELETE), ("string", "7"), ("null", None), ("bool", True), ("array", [1]),
            ("object", {"v": 1}), ("fraction", 2.5), ("1e30", 1e30), ("2^63", 2**63),
            ("2^64", 2**64), ("1e999", Raw("1e999"))],
    "float": [("delete", DELETE), ("string", "1.0"), ("null", None), ("bool", True),
              ("array", [1.0]), ("object", {}), ("1e999", Raw("1e999")), ("-1e999", Raw("-1e999")),
              ("NaN-token", Raw("NaN")), ("1e39", Raw("1e39"))],
    "str": [("delete", DELETE), ("int", 7), ("null", None), ("bool", True), ("array", []),
            ("object", {})],
    "bool": [("delete", DELETE), ("int0", 0), ("int1", 1), ("string", "true"), ("null", None),
             ("array", [])],
    "object": [("delete", DELETE), ("string", "x"), ("null", None), ("array", []), ("int", 7),
               ("empty", {})],
    "array": [("delete", DELETE), ("string", "x"), ("null", None), ("object", {}), ("int", 7),
              ("empty", [])],
}
# A shorter generic list for the repeated (last scaling element) targets.
GENERIC_SHORT = {k: v[:3] for k, v in GENERIC.items()}

W = "W"  # placeholder for the amax window in value tables


class Mut:
    def __init__(self, name, ops=None, text=None, expect=MUST_REFUSE, quick=False):
        self.name, self.ops, self.text = name, ops or [], text
        self.expect, self.quick = expect, quick  # expect: str, or {cmd: str}

    def expect_for(self, cmd):
        return self.expect.get(cmd, MUST_REFUSE) if isinstance(self.expect, dict) else self.expect

    def render(self, doc, window):
        if self.text is not None:
            return self.text(jdump(doc), doc)
        d = copy.deepcopy(doc)
        for path, value in self.ops:
            set_path(d, path, resolve(value, window))
        return jdump(d)


def resolve(v, window):
    if v == W:
        return window
    if isinstance(v, tuple) and v and v[0] == W:
        return window + v[1]
    return v


def pstr(path):
    s = ""
    for k in path:
        s += "[%s]" % k if isinstance(k, int) or k == "*" else ("." if s else "") + k
    return s


# (path, kind, different values (may be accepted, finite), invalid values, quick labels)
TOP_FIELDS = [
    (("step",), "int", [0, 1, 3, 4, 10**6], [-1, -5], {"delete", "string", "-1"}),
    (("seed",), "int", [0, -1, 2**62], [], {"null", "2^63"}),
    (("level",), "str", ["O3"], ["fp32", "bf16", "O1", "bogus", ""], {'"bogus"', '"fp32"'}),
    (("batch_size",), "int", [1, 8], [0, -1, 2**31, 10**9], {"0", "10^9"}),
    (("grad_accum",), "int", [2], [0, -1, 2**31], set()),
    (("data",), "object", [], [], set()),
    (("data", "train"), "str", ["/nonexistent.bin", ""], [], set()),
    (("data", "next_step"), "int", [0, 3], [-1], set()),
    (("model",), "object", [], [], {"delete"}),
    (("model", "preset"), "str", ["gpt2", ""], [], set()),
    (("model", "n_layer"), "int", [], [1, 3, 0, -1, 1001, 2**31], {"1", "3", "1e30"}),
    (("model", "n_head"), "int", [], [0, -1, 3, 2**31], set()),
    (("model", "n_embd"), "int", [], [32, 128, 0, -1, 2**31], {"-1"}),
    (("model", "seq_len"), "int", [], [16, 64, 0, -1, 2**31], {"2^31"}),
    (("model", "vocab_size"), "int", [], [257, 1024, 0, -1, 2**31], {"257"}),
    (("fp8",), "object", [], [], set()),
    (("fp8", "recipe"), "str", ["jit", "block", "mxfp8"], ["bogus", ""], set()),
    (("fp8", "mx_grad_format"), "str", ["e5m2"], ["bogus", "", "e4m3fn"], {'"bogus"'}),
    (("fp8", "amax_window"), "int", [], [(W, 1), (W, -1), 0, -1, 1025, 2**31], {"0", "window+1"}),
    (("fp8", "margin"), "int", [1, 8], [-1, 9, 2**31], set()),
    (("tokenizer",), "str", ["gpt2"], ["bogus", ""], {'"bogus"'}),
    (("tokenizer_dir",), "str", ["/nonexistent", ""], [], set()),
    (("world_size",), "int", [2, 64], [0, -1, 2**31], set()),
    (("grad_scaling_mu",), "float", [0.5, 2.0, 2.0**32, 1e-30], [0.0, -1.0, 2.0**33],
     {"1e999", "0.0", "2^33"}),
    (("scaling",), "array", [], [], {"empty"}),
]


def value_label(v):
    if isinstance(v, tuple) and v and v[0] == W:
        return "window%+d" % v[1]
    if v == W:
        return "window"
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2**20:
        for e in (31, 33, 62, 63, 64):
            if abs(v) == 2**e:
                return ("-" if v < 0 else "") + "2^%d" % e
        if v == 10**9:
            return "10^9"
        if v == 10**6:
            return "10^6"
    if isinstance(v, float) and v == 2.0**32:
        return "2^32"
    if isinstance(v, float) and v == 2.0**33:
        return "2^33"
    return json.dumps(v) if isinstance(v, str) else str(v)


def scaling_muts(idx, full_set, quick_labels):
    """Mutations of one scaling element (idx: 0, -1 or '*')."""
    muts = []
    at = lambda f: ("scaling", idx, f)  # noqa: E731
    tag = "scaling[%s]" % idx
    gen = GENERIC if full_set else GENERIC_SHORT

    def q(label):
        return label in quick_labels

    def old_times(f, k):
        return lambda old, el: el[f] * k

    fields = [("scale", "float"), ("scale_inv", "float"), ("history", "array"), ("filled", "int"),
              ("pos", "int"), ("jit_next", "bool"), ("counter", "int"), ("zero_amax", "int"),
              ("nonfinite_amax", "int")]
    for f, kind in fields:
        for label, v in gen[kind]:
            muts.append(Mut("%s.%s=%s" % (tag, f, label), [(at(f), v)], quick=q(f + ":" + label)))
    bad = {
        "scale": [("0", 0.0), ("-1", -1.0), ("denormal", 1e-45), ("x2-alone", old_times("scale", 2.0)),
                  ("2^127+inv", None)],
        "scale_inv": [("0", 0.0), ("-1", -1.0), ("denormal", 1e-45),
                      ("x2-alone", old_times("scale_inv", 2.0))],
        "history": [("len+1", lambda old, el: old + [0.0]), ("len-1", lambda old, el: old[:-1]),
                    ("entry0=-1", lambda old, el: [-1.0] + old[1:]),
                    ("entry0=1e999", lambda old, el: [Raw("1e999")] + old[1:]),
                    ("entry0=1e39", lambda old, el: [Raw("1e39")] + old[1:]),
                    ("entry0=string", lambda old, el: ["x"] + old[1:]),
                    ("entry0=null", lambda old, el: [None] + old[1:])],
        "filled": [("-1", -1), ("window+1", (W, 1)), ("2^31", 2**31)],
        "pos": [("-1", -1), ("window", W), ("window+5", (W, 5)), ("2^31", 2**31)],
        "counter": [("-1", -1)],
        "zero_amax": [("-1", -1), ("counter+1", lambda old, el: el["counter"] + 1)],
        "nonfinite_amax": [("-1", -1), ("counter+1", lambda old, el: el["counter"] + 1)],
    }
    if not full_set:
        bad = {k: v[:2] for k, v in bad.items()}
    for f, items in bad.items():
        for label, v in items:
            if label == "2^127+inv":
                ops = [(at("scale"), 2.0**127), (at("scale_inv"), 2.0**-127)]
            else:
                ops = [(at(f), v)]
            muts.append(Mut("%s.%s=%s" % (tag, f, label), ops, quick=q(f + ":" + label)))
    if full_set:
        diff = [
            ("scale,scale_inv=x2,/2", [(at("scale"), old_times("scale", 2.0)),
                                       (at("scale_inv"), old_times("scale_inv", 0.5))]),
            ("scale,scale_inv=2^126,2^-126", [(at("scale"), 2.0**126), (at("scale_inv"), 2.0**-126)]),
            ("history.entry0=3.0", [(at("history"), lambda old, el: [3.0] + old[1:])]),
            ("history=all-1e30", [(at("history"), lambda old, el: [1e30] * len(old))]),
            ("history=all-0", [(at("history"), lambda old, el: [0.0] * len(old))]),
            ("filled=0", [(at("filled"), 0)]),
            ("filled=window", [(at("filled"), W)]),
            ("filled,pos=window,window-1", [(at("filled"), W), (at("pos"), (W, -1))]),
            ("filled,pos=window,0", [(at("filled"), W), (at("pos"), 0)]),
            ("pos=0", [(at("pos"), 0)]),
            ("jit_next=flipped", [(at("jit_next"), lambda old, el: not old)]),
            ("counter=2^62", [(at("counter"), 2**62)]),
            ("extra-key", [(("scaling", idx, "x"), 1)]),
        ]
        for label, ops in diff:
            muts.append(Mut("%s.%s" % (tag, label), ops, expect=MAY_ACCEPT,
                            quick=q(label)))
        muts.append(Mut("%s.filled,pos=window,window" % tag, [(at("filled"), W), (at("pos"), W)]))
        for label, v in [("null", None), ("array", []), ("string", "x"), ("empty-object", {}), ("int", 7)]:
            muts.append(Mut("%s=%s" % (tag, label), [(("scaling", idx), v)], quick=q("el:" + label)))
    return muts


def trainer_mutations():
    muts = []
    ctl = Mut("control:unmodified", [], expect=MUST_ACCEPT, quick=True)
    muts.append(ctl)
    # Whole-document damage.
    whole = [
        ("file=empty", lambda t, d: "", True),
        ("file=whitespace", lambda t, d: "   \n", False),
        ("file=truncated-half", lambda t, d: t[: len(t) // 2], True),
        ("file=truncated-last-byte", lambda t, d: t[:-1], False),
        ("file=trailing-garbage", lambda t, d: t + "}x", False),
        ("file=top-level-array", lambda t, d: "[" + t + "]", False),
        ("file=null", lambda t, d: "null", False),
        ("file=empty-object", lambda t, d: "{}", True),
        ("file=binary", lambda t, d: "\x00\x01\x02\xff", False),
        ("file=bom", lambda t, d: "\ufeff" + t, None),  # a UTF-8 BOM: may be accepted
        ("file=utf16", lambda t, d: t.encode("utf-16"), False),
        ("file=NaN-token-for-scale", lambda t, d: jdump_with(d, ("scaling", 0, "scale"), Raw("NaN")),
         True),
        ("file=Infinity-token-for-mu", lambda t, d: jdump_with(d, ("grad_scaling_mu",), Raw("Infinity")),
         False),
        ("file=-Infinity-token-for-scale_inv",
         lambda t, d: jdump_with(d, ("scaling", 0, "scale_inv"), Raw("-Infinity")), False),
        ("file=deep-nesting-extra-key", lambda t, d: t[:-1] + ',"x":' + "[" * 100000 +
         "]" * 100000 + "}", None),
    ]
    for name, fn, quick in whole:
        if quick is None:
            muts.append(Mut(name, text=fn, expect=MAY_ACCEPT))
        else:
            muts.append(Mut(name, text=fn, quick=quick))
    muts.append(Mut("file=duplicate-key-step", text=lambda t, d: "{" + '"step":2,' + jdump(d)[1:],
                    expect=MAY_ACCEPT))
    muts.append(Mut("extra-top-level-key", [(("x_unknown",), 1)], expect=MAY_ACCEPT))
    # Every field: delete, wrong types, out-of-range values, merely different values.
    for path, kind, diff, invalid, quick_labels in TOP_FIELDS:
        name = pstr(path)
        for label, v in GENERIC[kind]:
            muts.append(Mut("%s=%s" % (name, label), [(path, v)], quick=label in quick_labels))
        for v in invalid:
            label = value_label(v)
            muts.append(Mut("%s=%s" % (name, label), [(path, v)], quick=label in quick_labels))
        for v in diff:
            label = value_label(v)
            muts.append(Mut("%s=%s" % (name, label), [(path, v)], expect=MAY_ACCEPT,
                            quick=label in quick_labels))
    # n_head changes no tensor shape: eval/sample cannot tell; resume must (config mismatch).
    for v in (1, 4):
        muts.append(Mut("model.n_head=%d" % v, [(("model", "n_head"), v)],
                        expect={"eval": MAY_ACCEPT, "sample": MAY_ACCEPT, "resume": MUST_REFUSE}))
    # Scaling states: the full set on the first and last element, a short set on all at once.
    muts += scaling_muts(0, True, {"scale:0", "scale:NaN-token", "scale_inv:x2-alone",
                                   "history:len+1", "pos:window", "filled:-1", "counter:-1",
                                   "jit_next:int1", "filled,pos=window,window-1", "el:null"})
    muts += scaling_muts(-1, True, set())
    for label, ops in [
        ("scale=0", [(("scaling", "*", "scale"), 0.0)]),
        ("scale_inv=-1", [(("scaling", "*", "scale_inv"), -1.0)]),
        ("pos=window", [(("scaling", "*", "pos"), W)]),
        ("filled=window+1", [(("scaling", "*", "filled"), (W, 1))]),
        ("history=empty", [(("scaling", "*", "history"), [])]),
        ("jit_next=int1", [(("scaling", "*", "jit_next"), 1)]),
        ("scale_inv=delete", [(("scaling", "*", "scale_inv"), DELETE)]),
    ]:
        muts.append(Mut("scaling[*]." + label, ops))
    muts.append(Mut("scaling[*].filled=window", [(("scaling", "*", "filled"), W)], expect=MAY_ACCEPT))
    muts.append(Mut("scaling=drop-last", [(("scaling",), lambda old, el: old[:-1])], quick=True))
    muts.append(Mut("scaling=append-copy", [(("scaling",), lambda old, el: old + [old[-1]])]))
    return muts


def jdump_with(doc, path, raw):
    d = copy.deepcopy(doc)
    set_path(d, path, raw)
    return jdump(d)


def class_trainer_json(h):
    cases = []
    for m in trainer_mutations():
        for cmd in CKPT_CMDS:
            def fn(h, d, m=m, cmd=cmd):
                ref = h.fixture("ref")
                run = h.copy_run(d) if cmd == "resume" else None
                ck = os.path.join(run, "checkpoints", "step-2") if run else h.copy_ckpt(d)
                text = m.render(ref["trainer"], ref["window"])
                if isinstance(text, str):
                    text = text.encode("utf-8", "surrogatepass")
                write(os.path.join(ck, "trainer.json"), text)
                return h.checkpoint_cmd(cmd, d, ck, run, m.expect_for(cmd))
            cases.append(Case("trainer_json", "%s :: %s" % (m.name, cmd), fn, quick=m.quick,
                              expect=m.expect_for(cmd)))
    return cases


# --------------------------------------------------------------------------------------
# Class 2: safetensors mutations (optimizer.safetensors, model.safetensors).

F16_NAN, F16_INF, F16_NINF, F16_NEG1 = 0x7E00, 0x7C00, 0xFC00, 0xBC00


def pick_tensor(header, which):
    """A tensor by role: 'first' in file order, 'attn' (an attention weight), 'last'."""
    names = st_tensors(header)
    if which == "first":
        return names[0]
    if which == "last":
        return names[-1]
    for n in names:
        if which in n:
            return n
    return names[len(names) // 2]


def state_name(header, param_role, state):
    """NAME.<state> for the parameter of a role in optimizer.safetensors."""
    masters = [n for n in st_tensors(header) if n.endswith(".master")]
    if param_role == "first":
        base = masters[0]
    else:
        base = next((n for n in masters if param_role in n), masters[len(masters) // 2])
    return base[: -len(".master")] + "." + state


def poke(path, tensor, elem, raw_bytes):
    data, n, header = st_read(path)
    e = header[tensor]
    off = 8 + n + e["data_offsets"][0] + elem * len(raw_bytes)
    data = bytearray(data)
    data[off:off + len(raw_bytes)] = raw_bytes
    write(path, bytes(data))


def set_header_len(path, fn):
    data, n, _ = st_read(path)
    write(path, struct.pack("<Q", fn(n, len(data)) % 2**64) + data[8:])


def edit_header(path, fn):
    data, n, header = st_read(path)
    fn(header)
    st_write(path, header, data[8 + n:])


def truncate_at(path, where):
    size = os.path.getsize(path)
    _, n, _ = st_read(path)
    pos = {"0": 0, "1": 1, "7": 7, "8": 8, "9": 9, "header-mid": 8 + n // 2,
           "header-end-1": 8 + n - 1, "header-end": 8 + n, "data+1": 8 + n + 1,
           "data-mid": (8 + n + size) // 2, "size-1": size - 1}.get(where)
    if pos is None:  # "frac:K/N"
        k, m = where.split(":")[1].split("/")
        pos = 8 + n + (size - 8 - n) * int(k) // int(m)
    os.truncate(path, pos)


# Commands per file: which read the file's values (eval: optimizer masters only).
OPT_CMDS = ("eval", "resume", "inspect", "convert")
MODEL_CMDS = ("sample", "inspect", "convert")


def st_cmd(h, d, cmd, file, ck, run, expect, fast=False):
    if cmd in ("eval", "sample", "resume"):
        return h.checkpoint_cmd(cmd, d, ck, run, expect, fast=fast)
    path = os.path.join(ck, file)
    if cmd == "inspect":
        p = h.run([h.binary, "--threads", "1", "inspect", path, "--format", "e4m3"], d, "inspect")
    else:
        p = h.run([h.binary, "--threads", "1", "convert", path, os.path.join(d, "out.safetensors"),
                   "--to", "e4m3", "--scaling", "tensor"], d, "convert")
    return judge(p, expect, None, None)


def safetensors_mutations():
    """(name, file, mutate(path, h), {cmd: expect}, quick)."""
    O, M = "optimizer.safetensors", "model.safetensors"
    muts = []
    all_opt = lambda e: {c: e for c in OPT_CMDS}  # noqa: E731
    all_model = lambda e: {c: e for c in MODEL_CMDS}  # noqa: E731
    muts.append(("control:unmodified-optimizer", O, lambda p, h: None, all_opt(MUST_ACCEPT), True))
    muts.append(("control:unmodified-model", M, lambda p, h: None, all_model(MUST_ACCEPT), True))

    def set_scalar(state, role, value):
        def f(path, h):
            _, _, hd = st_read(path)
            poke(path, state_name(hd, role, state + "_scale_inv"), 0, struct.pack("<f", value))
        return f

    # *_scale_inv scalars. eval reads only the masters' (the others may be accepted there).
    for state in ("master", "m1", "m2"):
        users = ("eval", "resume", "convert") if state == "master" else ("resume", "convert")
        for label, v, bad in [("NaN", float("nan"), True), ("0", 0.0, True), ("-1", -1.0, True),
                              ("-0", -0.0, True), ("inf", float("inf"), True),
                              ("denormal", 1e-42, False), ("tiny-normal-2^-126", 2.0**-126, False),
                              ("x2", None, False)]:
            for role in (("first", "attn") if state == "master" else ("first",)):
                if v is None:
                    def f(path, h, state=state, role=role):
                        _, _, hd = st_read(path)
                        nm = state_name(hd, role, state + "_scale_inv")
                        data, n, hd = st_read(path)
                        off = 8 + n + hd[nm]["data_offsets"][0]
                        old = struct.unpack("<f", data[off:off + 4])[0]
                        poke(path, nm, 0, struct.pack("<f", old * 2))
                    fn = f
                else:
                    fn = set_scalar(state, role, v)
                exp = {c: (MUST_REFUSE if bad and c in users else MAY_ACCEPT) for c in OPT_CMDS}
                exp["inspect"] = MAY_ACCEPT_ANY
                if not bad:
                    exp["convert"] = MAY_ACCEPT_ANY
                q = (state, label, role) in {("master", "NaN", "first"), ("master", "0", "attn"),
                                             ("m2", "-1", "first")}
                muts.append(("%s(%s)_scale_inv=%s" % (state, role, label), O, fn, exp, q))

    # NaN/inf/negative state values.
    def poke_state(state, role, elem, raw):
        def f(path, h):
            _, _, hd = st_read(path)
            poke(path, state_name(hd, role, state), elem, raw)
        return f

    for state, label, raw, users in [
            ("master", "NaN", struct.pack("<H", F16_NAN), ("eval", "resume")),
            ("master", "inf", struct.pack("<H", F16_INF), ("eval", "resume")),
            ("master", "-inf", struct.pack("<H", F16_NINF), ("eval", "resume")),
            ("m1", "NaN", b"\x7f", ("resume",)),
            ("m1", "-NaN", b"\xff", ("resume",)),
            ("m2", "NaN", struct.pack("<H", F16_NAN), ("resume",)),
            ("m2", "inf", struct.pack("<H", F16_INF), ("resume",)),
            ("m2", "negative", struct.pack("<H", F16_NEG1), ("resume",))]:
        for role, elem in (("first", 0), ("attn", 5)):
            exp = {c: (MUST_REFUSE if c in users else MAY_ACCEPT) for c in OPT_CMDS}
            exp["inspect"] = exp["convert"] = MAY_ACCEPT_ANY
            q = (state, label, role) in {("master", "NaN", "first"), ("m2", "negative", "first")}
            muts.append(("%s(%s)[%d]=%s" % (state, role, elem, label), O,
                         poke_state(state, role, elem, raw), exp, q))
    # F32 model values: sample must refuse.
    for label, v in (("NaN", 0x7FC00000), ("inf", 0x7F800000), ("-inf", 0xFF800000)):
        for role, elem in (("first", 0), ("attn", 7), ("last", 0)):
            def f(path, h, role=role, elem=elem, v=v):
                _, _, hd = st_read(path)
                poke(path, pick_tensor(hd, role), elem, struct.pack("<I", v))
            exp = {"sample": MUST_REFUSE, "inspect": MAY_ACCEPT_ANY, "convert": MAY_ACCEPT_ANY}
            muts.append(("model(%s)[%d]=%s" % (role, elem, label), M, f, exp,
                         label == "NaN" and role == "first"))

    # Header length field: decreased by 1..63 (into the padding, then the JSON), increased.
    for file, cmds in ((O, OPT_CMDS), (M, MODEL_CMDS)):
        tag = "opt" if file == O else "model"
        for k in range(1, 64):
            every = k in (1, 2, 3, 7, 8, 16, 31, 63)
            exp = {c: MUST_REFUSE for c in cmds} if every else {"inspect": MUST_REFUSE}
            muts.append(("%s:header_len-%d" % (tag, k), file,
                         lambda p, h, k=k: set_header_len(p, lambda n, s: n - k), exp,
                         k in (1, 2, 63) and file == O))
        for label, fn in [("+1", lambda n, s: n + 1), ("+8", lambda n, s: n + 8),
                          ("+64", lambda n, s: n + 64), ("=file-8", lambda n, s: s - 8),
                          ("=file-7", lambda n, s: s - 7), ("=0", lambda n, s: 0),
                          ("=2^32", lambda n, s: 2**32), ("=2^63", lambda n, s: 2**63),
                          ("=2^64-1", lambda n, s: 2**64 - 1)]:
            muts.append(("%s:header_len%s" % (tag, label), file,
                         lambda p, h, fn=fn: set_header_len(p, fn), {c: MUST_REFUSE for c in cmds},
                         label == "+1" and file == O))
        # Truncation at many offsets.
        offs = ["0", "1", "7", "8", "9", "header-mid", "header-end-1", "header-end", "data+1",
                "data-mid", "size-1"] + ["frac:%d/16" % i for i in range(1, 16, 2)]
        for w in offs:
            muts.append(("%s:truncate@%s" % (tag, w), file, lambda p, h, w=w: truncate_at(p, w),
                         {c: MUST_REFUSE for c in cmds}, w == "data-mid" and file == O))
        # Extra bytes after the data, and a hole in the data (the byte buffer must be
        # covered by the tensors exactly).
        muts.append(("%s:append-1-byte" % tag, file,
                     lambda p, h: write(p, b"\x00", "ab"), {c: MUST_REFUSE for c in cmds}, file == M))
        muts.append(("%s:append-64-bytes" % tag, file,
                     lambda p, h: write(p, b"\x00" * 64, "ab"), {c: MUST_REFUSE for c in cmds}, False))

    # dtype / shape / name / metadata edits (header rewritten, data kept).
    def hedit(fn):
        return lambda p, h: edit_header(p, fn)

    def on_state(state, fn, role="first"):
        def g(hd):
            fn(hd[state_name(hd, role, state)])
        return g

    def set_dtype(dt):
        return lambda e: e.__setitem__("dtype", dt)

    def add_meta(k, v):
        return lambda hd: hd.setdefault("__metadata__", {}).__setitem__(k, v)

    O_EXP_READERS = lambda users, other=MAY_ACCEPT_ANY: dict(  # noqa: E731
        {c: (MUST_REFUSE if c in users else MAY_ACCEPT) for c in ("eval", "resume")},
        inspect=other, convert=other)
    muts += [
        ("master:dtype=BF16", O, hedit(on_state("master", set_dtype("BF16"))),
         O_EXP_READERS(("eval", "resume")), True),
        ("master:dtype=I16", O, hedit(on_state("master", set_dtype("I16"))),
         O_EXP_READERS(("eval", "resume")), False),
        ("master:dtype=F32(size mismatch)", O, hedit(on_state("master", set_dtype("F32"))),
         {c: MUST_REFUSE for c in OPT_CMDS}, False),
        ("master:dtype=X99", O, hedit(on_state("master", set_dtype("X99"))),
         {c: MUST_REFUSE for c in OPT_CMDS}, False),
        ("m1:dtype=F8_E5M2", O, hedit(on_state("m1", set_dtype("F8_E5M2"))),
         O_EXP_READERS(("resume",)), False),
        ("m2:dtype=BF16", O, hedit(on_state("m2", set_dtype("BF16"))),
         O_EXP_READERS(("resume",)), False),
        ("master:shape=[n/2,2]", O,
         hedit(on_state("master", lambda e: e.__setitem__("shape", [e["shape"][0] // 2, 2]))),
         dict(O_EXP_READERS(()), eval=MAY_ACCEPT, resume=MAY_ACCEPT), False),
        ("master:shape=[n-1](span mismatch)", O,
         hedit(on_state("master", lambda e: e.__setitem__("shape", [e["shape"][0] - 1]))),
         {c: MUST_REFUSE for c in OPT_CMDS}, False),
        ("master:shape=[n-1]+offsets(hole)", O,
         hedit(on_state("master", lambda e: (e.__setitem__("shape", [e["shape"][0] - 1]),
                                             e["data_offsets"].__setitem__(1, e["data_offsets"][1] - 2)))),
         {c: MUST_REFUSE for c in OPT_CMDS}, False),
        ("master:renamed", O,
         hedit(lambda hd: hd.__setitem__("zz.renamed", hd.pop(state_name(hd, "first", "master")))),
         O_EXP_READERS(("eval", "resume")), False),
        ("m2:renamed", O,
         hedit(lambda hd: hd.__setitem__("zz.renamed", hd.pop(state_name(hd, "first", "m2")))),
         O_EXP_READERS(("resume",)), False),
        ("master_scale_inv:shape=[2](span mismatch)", O,
         hedit(on_state("master_scale_inv", lambda e: e.__setitem__("shape", [2]))),
         {c: MUST_REFUSE for c in OPT_CMDS}, False),
        ("master_scale_inv:dtype=I32", O,
         hedit(on_state("master_scale_inv", set_dtype("I32"))),
         O_EXP_READERS(("eval", "resume")), False),
        ("meta:level=O3", O, hedit(add_meta("level", "O3")), dict(O_EXP_READERS(()), eval=MAY_ACCEPT,
                                                                 resume=MAY_ACCEPT), False),
        ("meta:level=fp32", O, hedit(add_meta("level", "fp32")), O_EXP_READERS(("resume",)), False),
        ("meta:level=bogus", O, hedit(add_meta("level", "bogus")), O_EXP_READERS(("resume",)), True),
        ("meta:m2=e4m3", O, hedit(add_meta("m2", "e4m3")), O_EXP_READERS(("resume",)), False),
        ("meta:master=bogus", O, hedit(add_meta("master", "bogus")), O_EXP_READERS(("resume",)), False),
        ("meta:steps=-1", O, hedit(add_meta("steps", "-1")), O_EXP_READERS(("resume",)), False),
        ("meta:steps=abc", O, hedit(add_meta("steps", "abc")), O_EXP_READERS(("resume",)), False),
        ("meta:steps=1e30", O, hedit(add_meta("steps", "99999999999999999999999999999")),
         O_EXP_READERS(("resume",)), False),
        ("meta:skipped=steps+1", O, hedit(add_meta("skipped", "3")), O_EXP_READERS(("resume",)), False),
        ("meta:skipped=-1", O, hedit(add_meta("skipped", "-1")), O_EXP_READERS(("resume",)), False),
        ("meta:steps=delete", O, hedit(lambda hd: hd["__metadata__"].pop("steps")),
         O_EXP_READERS(("resume",)), False),
        ("model:wte-renamed", M, hedit(lambda hd: hd.__setitem__("zz", hd.pop(pick_tensor(hd, "first")))),
         {"sample": MUST_REFUSE, "inspect": MAY_ACCEPT_ANY, "convert": MAY_ACCEPT_ANY}, False),
        ("model:dtype=I32", M, hedit(lambda hd: hd[pick_tensor(hd, "first")].__setitem__("dtype", "I32")),
         {"sample": MUST_REFUSE, "inspect": MAY_ACCEPT_ANY, "convert": MAY_ACCEPT_ANY}, False),
        ("model:offsets-overlap", M,
         hedit(lambda hd: hd[st_tensors(hd)[1]].__setitem__(
             "data_offsets", [hd[st_tensors(hd)[0]]["data_offsets"][0],
                              hd[st_tensors(hd)[0]]["data_offsets"][0] +
                              hd[st_tensors(hd)[1]]["data_offsets"][1] -
                              hd[st_tensors(hd)[1]]["data_offsets"][0]])),
         {c: MUST_REFUSE for c in MODEL_CMDS}, False),
    ]
    return muts


def class_safetensors(h):
    cases = []
    for name, file, mutate, exp, quick in safetensors_mutations():
        for cmd, e in exp.items():
            def fn(h, d, file=file, mutate=mutate, cmd=cmd, e=e):
                run = h.copy_run(d) if cmd == "resume" else None
                ck = os.path.join(run, "checkpoints", "step-2") if run else h.copy_ckpt(d)
                mutate(os.path.join(ck, file), h)
                return st_cmd(h, d, cmd, file, ck, run, e)
            cases.append(Case("safetensors", "%s :: %s" % (name, cmd), fn, quick=quick, expect=e))
    return cases


# --------------------------------------------------------------------------------------
# Class 3: configuration (--set values, --config files).

INT_KEYS = {
    # key: (valid special values accepted as merely different, invalid values)
    "model.n_layer": ([0, 1], [-1, 1001]),
    "model.n_head": ([0, 1], [-1, 3]),
    "model.n_embd": ([0], [-1, 2147483647]),
    "model.seq_len": ([0, 1], [-1, 2147483647]),
    "train.batch_size": ([1], [0, -1, 2147483647, 1 << 20]),
    "train.grad_accum": ([1], [0, -1]),
    "train.steps": ([1], [0, -1]),
    "train.warmup_steps": ([0, 2147483647], [-1]),
    "train.eval_every": ([0, 2147483647], [-1]),
    "train.eval_batches": ([1, 2147483647], [0, -1]),
    "train.checkpoint_every": ([0, 2147483647], [-1]),
    "train.seed": ([0, -1, 9223372036854775807], []),
    "train.threads": ([0, 5000, 100000], [-1]),
    "precision.amax_window": ([1, 1024], [0, -1, 1025]),
    "precision.margin": ([0, 8], [-1, 9]),
    "telemetry.every": ([0, 2147483647], [-1]),
    "parallel.tp": ([1], [0, -1, 1025, 2147483647]),
    "parallel.pp": ([1], [0, -1, 1025, 2147483647]),
    "finetune.samples": ([2, 1024], [1, 0, -1, 1025]),
    "finetune.max_new_tokens": ([1, 65536], [0, -1, 65537]),
    # 0 is full training; any rank needs train.init_from, which the default run has not.
    "finetune.lora_rank": ([0], [-1, 65537, 1, 8]),
}
FLOAT_KEYS = {
    # key: (valid special values, invalid values); every non-finite value is invalid.
    # Documented bounds (docs/hardening.md): train.lr in (0, 10], weight_decay <= 100.
    "train.lr": (["1e-320"], ["0", "-1", "1e308"]),
    "train.min_lr": (["0", "1e-320"], ["-1", "1e308"]),
    "train.weight_decay": (["0", "1e-320"], ["-1", "1e308"]),
    "train.beta1": (["0", "1e-320"], ["1", "-1", "1e308"]),
    "train.beta2": (["0", "1e-320"], ["1", "-1", "1e308"]),
    "train.grad_clip": (["0", "1e-320", "1e308"], ["-1"]),
    "telemetry.underflow_alarm": (["0", "1"], ["-1", "1.5"]),
    "telemetry.saturation_alarm": (["0", "1"], ["-1", "2"]),
    "telemetry.kurtosis_alarm": (["0", "1.5", "1e6"], ["-1", "1", "0.5", "1e7"]),
    "telemetry.loss_spike_alarm": (["0", "1.01"], ["-1", "1", "1e7"]),
    "finetune.beta": (["1e-6", "1000"], ["0", "-1", "1e308"]),
    "finetune.clip": (["0", "10"], ["-1", "11"]),
    "finetune.kl": (["0", "1000"], ["-1", "1e308"]),
    "finetune.temperature": (["0", "100"], ["-1", "101"]),
    "finetune.lora_alpha": (["1e-6", "1e6"], ["0", "-1", "1e7"]),
}
NONFINITE = ["inf", "-inf", "nan", "+inf", "-nan"]
BIG_INTS = ["2147483648", "-2147483649", "9223372036854775807", "9223372036854775808",
            "99999999999999999999999"]
QUICK_CONFIG = {"train.lr=inf", "train.lr=nan", "train.weight_decay=inf", "train.beta1=1",
                "train.threads=100000", "train.batch_size=2147483647", "model.n_layer=1e308",
                "train.steps=9223372036854775808", "train.grad_clip=inf", "train.lr=1e308"}


def config_train_case(h, d, sets, expect, extra_argv=(), mention=None, fast=False,
                      config=None, env=None, steps=STEPS):
    argv = h.train_argv(d, extra=sets, steps=steps)
    if config is not None:
        argv += ["--config", config]
    argv += list(extra_argv)
    p = h.run(argv, d, "train", timeout=h.fast_timeout if fast else None, env_extra=env)
    return judge(p, expect, train_finite(os.path.join(d, "run")), mention)


def class_config(h):
    cases = []

    def add(name, fn, quick=False, expect="", fast=False):
        cases.append(Case("config", name, fn, quick=quick or name in QUICK_CONFIG, expect=expect,
                          fast=fast))

    def set_case(key, value, expect, mention=None, more=()):
        s = "%s=%s" % (key, value)
        add(s, lambda h, d: config_train_case(h, d, [s] + list(more), expect, mention=mention),
            expect=expect)

    for key, (valid, invalid) in INT_KEYS.items():
        for v in NONFINITE + ["1e308", "1e-320", "2.5", "abc", "''", "[1]"]:
            set_case(key, v, MUST_REFUSE, mention=key)
        for v in BIG_INTS:
            # train.seed is an int64: only values beyond it are invalid there.
            exp = MAY_ACCEPT if (key == "train.seed" and int(v) in range(-2**63, 2**63)) else MUST_REFUSE
            set_case(key, v, exp, mention=key if exp == MUST_REFUSE else None)
        for v in invalid:
            # Sizes too big to run must be refused (memory check), not attempted.
            set_case(key, v, MUST_REFUSE)
        for v in valid:
            set_case(key, v, MAY_ACCEPT)
    for key, (valid, invalid) in FLOAT_KEYS.items():
        for v in NONFINITE + ["abc", "[1.0]"]:
            set_case(key, v, MUST_REFUSE, mention=key)
        for v in invalid:
            set_case(key, v, MUST_REFUSE, mention=key)
        for v in valid:
            # A tiny lr is below the default min_lr (refused as min_lr > lr): lower that too.
            set_case(key, v, MAY_ACCEPT, more=["train.min_lr=0"] if key == "train.lr" else ())
    for key, v in [("model.preset", "bogus"), ("data.tokenizer", "bogus"), ("precision.level", "O9"),
                   ("precision.recipe", "bogus"), ("precision.grad_scaling", "bogus"),
                   ("telemetry.what_if", "bogus"), ("telemetry.stop_on_alarm", "maybe"),
                   ("parallel.sequence", "maybe"), ("parallel.gather", "e4m3"),
                   ("parallel.wire", "fp8"), ("parallel.pp_wire", "e5m2"),
                   ("precision.master", "e5m2"), ("precision.m1", "bogus"), ("precision.m2", "f8"),
                   ("precision.m1", "bf16"),
                   ("train.out_dir", "''"), ("data.train", "''"), ("model.preset", "[1,2]"),
                   ("data.train", "{a=1}"), ("precision.level", "o2"),
                   ("train.init_from", "'/nonexistent/model.safetensors'"),
                   ("finetune.objective", "bogus"), ("finetune.objective", "dpo"),
                   ("finetune.objective", "grpo"), ("finetune.lora_targets", "bogus"),
                   ("finetune.lora_targets", "''"), ("finetune.lora_targets", "'mlp.c_fc,'"),
                   ("finetune.lora_targets", "'mlp.c_fc,mlp.c_fc'")]:
        set_case(key, v, MUST_REFUSE)
    # --set syntax.
    for label, s, exp in [("no-equals", "train.lr", MUST_REFUSE),
                          ("unknown-key", "train.bogus=1", MUST_REFUSE),
                          ("unknown-section", "bogus.lr=1", MUST_REFUSE),
                          ("no-section", "lr=1", MUST_REFUSE),
                          ("empty-key", "=1", MUST_REFUSE),
                          ("empty-value", "train.lr=", MUST_REFUSE),
                          ("toml-injection", "train.lr=1\nx = 2", MUST_REFUSE),
                          ("toml-injection-table", "train.lr=1\n[train]\nsteps = 1000000", MUST_REFUSE),
                          ("trailing-comment", "train.lr=0.001 # c", MAY_ACCEPT)]:
        add("--set %s" % label, lambda h, d, s=s, exp=exp: config_train_case(h, d, [s], exp), expect=exp,
            quick=label in ("toml-injection", "unknown-key"))

    # --config files. The tiny --set overrides come too: a config that is silently ignored
    # then trains and shows up as a silent acceptance.
    def cfg_case(label, make, exp, quick=False, fast=False, keys=()):
        """The refusal must name the file, or (for a bad value) the key."""
        def fn(h, d):
            path = make(d)
            mention = [re.escape(path)] + [re.escape(k) for k in keys]
            return config_train_case(h, d, [], exp, config=path, fast=fast,
                                     mention=mention if exp == MUST_REFUSE else None)
        add("--config %s" % label, fn, quick=quick, expect=exp, fast=fast)

    def file_with(content, name="c.toml"):
        def make(d):
            p = os.path.join(d, name)
            write(p, content if isinstance(content, bytes) else content.encode())
            return p
        return make

    def fifo(d):
        p = os.path.join(d, "c.toml")
        os.mkfifo(p)
        return p

    def directory(d):
        p = os.path.join(d, "cfgdir")
        os.mkdir(p)
        return p

    cfg_case("directory", directory, MUST_REFUSE, quick=True, fast=True)
    cfg_case("fifo", fifo, MUST_REFUSE, quick=True, fast=True)
    cfg_case("/dev/zero", lambda d: "/dev/zero", MUST_REFUSE, quick=True, fast=True)
    cfg_case("/dev/null", lambda d: "/dev/null", MAY_ACCEPT)
    cfg_case("missing", lambda d: os.path.join(d, "nope.toml"), MUST_REFUSE, fast=True)
    cfg_case("binary", file_with(bytes(range(256)) * 8), MUST_REFUSE, fast=True)
    cfg_case("nul-byte", file_with(b"[train]\nlr = 0.001\x00\n"), MUST_REFUSE, fast=True)
    cfg_case("invalid-utf8", file_with(b"[model]\npreset = \"\xff\xfe\"\n"), MUST_REFUSE, fast=True)
    cfg_case("empty", file_with(""), MAY_ACCEPT)
    cfg_case("bom", file_with(b"\xef\xbb\xbf[train]\nlr = 0.001\n"), MAY_ACCEPT)
    cfg_case("bom+unknown-key", file_with(b"\xef\xbb\xbf[train]\nbogus = 1\n"), MUST_REFUSE, keys=("bogus",))
    cfg_case("crlf", file_with(b"[train]\r\nlr = 0.001\r\n"), MAY_ACCEPT)
    cfg_case("unknown-key", file_with("[train]\nbogus = 1\n"), MUST_REFUSE, quick=True, keys=("bogus",))
    cfg_case("unknown-section", file_with("[bogus]\nx = 1\n"), MUST_REFUSE, keys=("bogus",))
    cfg_case("key-outside-section", file_with("lr = 1\n"), MUST_REFUSE, keys=("lr",))
    cfg_case("section-not-table", file_with("train = 1\n"), MUST_REFUSE, keys=("train",))
    cfg_case("dotted-key", file_with("train.lr = 0.001\n"), MAY_ACCEPT)
    cfg_case("duplicate-key", file_with("[train]\nlr = 0.001\nlr = 0.002\n"), MUST_REFUSE, keys=("lr",))
    cfg_case("lr=inf", file_with("[train]\nlr = inf\n"), MUST_REFUSE, quick=True, keys=("lr",))
    cfg_case("lr=nan", file_with("[train]\nlr = nan\n"), MUST_REFUSE, keys=("lr",))
    cfg_case("weight_decay=inf", file_with("[train]\nweight_decay = inf\n"), MUST_REFUSE, keys=("weight_decay",))
    cfg_case("beta2=1.0", file_with("[train]\nbeta2 = 1.0\n"), MUST_REFUSE, keys=("beta2",))
    cfg_case("deep-array", file_with("[train]\nlr = " + "[" * 100000 + "]" * 100000 + "\n"),
             MUST_REFUSE, keys=("lr",))
    cfg_case("deep-inline-table", file_with("[train]\nlr = " + "{a=" * 50000 + "1" + "}" * 50000 + "\n"),
             MUST_REFUSE, keys=("lr",))
    cfg_case("huge-comment-5MiB", file_with("#" + "x" * (5 << 20) + "\n[train]\nlr = 0.001\n"),
             MAY_ACCEPT)
    cfg_case("long-key", file_with("[train]\n" + "k" * 100000 + " = 1\n"), MUST_REFUSE, keys=("kkkkkkkk",))
    cfg_case("datetime-value", file_with("[train]\nlr = 1979-05-27T07:32:00Z\n"), MUST_REFUSE, keys=("lr",))
    add("--config twice", lambda h, d: config_train_case(
        h, d, [], MUST_REFUSE, config="/dev/null", extra_argv=("--config", "/dev/null")),
        expect=MUST_REFUSE)
    return cases


# --------------------------------------------------------------------------------------
# Class 4: token files.


def class_tokens(h):
    cases = []

    def add(name, fn, quick=False, expect="", fast=False, heavy=False):
        cases.append(Case("tokens", name, fn, quick=quick, expect=expect, fast=fast, heavy=heavy))

    def from_bytes(fn):
        def make(h, d):
            p = os.path.join(d, "t.bin")
            write(p, fn(h.fixture("tokens")))
            return p
        return make

    def fifo(h, d):
        p = os.path.join(d, "t.bin")
        os.mkfifo(p)
        return p

    def directory(h, d):
        p = os.path.join(d, "t.bin")
        os.mkdir(p)
        return p

    def symlink_loop(h, d):
        p = os.path.join(d, "t.bin")
        os.symlink(p, p)
        return p

    toks = lambda t: t["train_tokens"][:4000]  # noqa: E731
    bad_files = [
        # (label, make(h, d) -> path, fast, quick)
        ("fifo", fifo, True, True),
        ("directory", directory, True, False),
        ("/dev/zero", lambda h, d: "/dev/zero", True, True),
        ("/dev/null", lambda h, d: "/dev/null", True, False),
        ("missing", lambda h, d: os.path.join(d, "nope.bin"), True, False),
        ("symlink-loop", symlink_loop, True, False),
        ("empty", from_bytes(lambda t: b""), True, False),
        ("header-100-bytes", from_bytes(lambda t: token_file_bytes([])[:100]), True, False),
        ("header-1023-bytes", from_bytes(lambda t: token_file_bytes([])[:1023]), True, False),
        ("header-only-count-0", from_bytes(lambda t: token_file_bytes([])), True, True),
        ("bad-magic", from_bytes(lambda t: token_file_bytes(toks(t), magic=20240521)), True, False),
        ("version-2", from_bytes(lambda t: token_file_bytes(toks(t), version=2)), True, False),
        ("count=-1", from_bytes(lambda t: token_file_bytes(toks(t), count=-1)), True, False),
        ("count+1", from_bytes(lambda t: token_file_bytes(toks(t), count=len(toks(t)) + 1)), True, True),
        ("count-1", from_bytes(lambda t: token_file_bytes(toks(t), count=len(toks(t)) - 1)), True, False),
        ("count=2^31-1", from_bytes(lambda t: token_file_bytes(toks(t), count=2**31 - 1)), True, False),
        ("odd-size", from_bytes(lambda t: token_file_bytes(toks(t)) + b"\x00"), True, False),
        ("token=512(vocab)@0", from_bytes(lambda t: token_file_bytes([512] + toks(t)[1:])), True, True),
        ("token=65535@end", from_bytes(lambda t: token_file_bytes(toks(t)[:-1] + [65535])), True, False),
    ]

    def mention_of(path):
        return re.escape(path) if not path.startswith("/dev/") else None

    for role in ("train", "val"):
        for label, make, fast, quick in bad_files:
            def fn(h, d, make=make, role=role):
                path = make(h, d)
                t = h.fixture("tokens")
                argv = h.train_argv(d, train=path if role == "train" else t["train"],
                                    val=path if role == "val" else t["val"])
                p = h.run(argv, d, "train", timeout=h.fast_timeout if fast else None)
                return judge(p, MUST_REFUSE, train_finite(os.path.join(d, "run")),
                             mention=mention_of(path))
            add("data.%s=%s" % (role, label), fn, quick=quick and role == "train",
                expect=MUST_REFUSE, fast=fast)
    for label, make, fast, quick in bad_files:
        def fn(h, d, make=make):
            path = make(h, d)
            p = h.run(h.eval_argv(h.copy_ckpt(d), data=path), d, "eval",
                      timeout=h.fast_timeout if fast else None)
            return judge(p, MUST_REFUSE, eval_finite, mention=mention_of(path))
        add("eval --data %s" % label, fn, quick=quick and label == "fifo", expect=MUST_REFUSE,
            fast=fast)

    # Tokens the byte tokenizer never makes but the model's vocabulary holds.
    def mid_vocab(h, d):
        t = h.fixture("tokens")
        p = os.path.join(d, "t.bin")
        write(p, token_file_bytes([300] + t["train_tokens"][1:]))
        r = h.run(h.train_argv(d, train=p), d, "train")
        return judge(r, MAY_ACCEPT, train_finite(os.path.join(d, "run")))
    add("data.train=token=300(byte vocab 257, model 512)", mid_vocab, expect=MAY_ACCEPT)

    # Validation file too short for one batch (B*T+1 = 129 tokens): refused before step 1.
    def short_val(n, expect=MUST_REFUSE):
        def fn(h, d):
            t = h.fixture("tokens")
            p = os.path.join(d, "val_short.bin")
            write(p, token_file_bytes(t["val_tokens"][:n]))
            run = os.path.join(d, "run")
            r = h.run(h.train_argv(d, val=p), d, "train")
            o = judge(r, expect, train_finite(run), mention=re.escape(p))
            if o.kind == PASS and r.rc != 0:
                steps = [x for x in metrics_lines(run) if "loss" in x]
                if steps:
                    return Outcome(POOR, "refused only after %d training step(s) ran (metrics.jsonl "
                                   "has steps): %s" % (len(steps), first_err(r)))
            return o
        return fn
    for n in (10, 33, 100, 128):
        add("data.val=%d-tokens(short of one batch)" % n, short_val(n), quick=n == 100,
            expect=MUST_REFUSE)
    add("data.val=129-tokens(one batch)", short_val(129, MAY_ACCEPT), expect=MAY_ACCEPT)

    # Train file too short for one window (T+1 = 33), and just long enough.
    def short_train(n, expect):
        def fn(h, d):
            t = h.fixture("tokens")
            p = os.path.join(d, "train_short.bin")
            write(p, token_file_bytes(t["train_tokens"][:n]))
            r = h.run(h.train_argv(d, train=p), d, "train")
            return judge(r, expect, train_finite(os.path.join(d, "run")),
                         mention=re.escape(p) if expect == MUST_REFUSE else None)
        return fn
    for n in (0, 1, 32):
        add("data.train=%d-tokens" % n, short_train(n, MUST_REFUSE), expect=MUST_REFUSE, quick=n == 32)
    add("data.train=33-tokens(one window)", short_train(33, MAY_ACCEPT), expect=MAY_ACCEPT)

    # A token file truncated while a run reads it: a clean error, not SIGBUS.
    def truncated_while(role, keep):
        def fn(h, d):
            t = h.fixture("tokens")
            p = os.path.join(d, "live.bin")
            shutil.copy(t["big"], p)
            extra = ["train.eval_every=%d" % (1 if role == "val" else 0), "train.checkpoint_every=0"]
            argv = h.train_argv(d, train=p if role == "train" else None,
                                val=p if role == "val" else None, steps=3000, extra=extra)

            def cut(proc):
                alive = proc.alive()
                os.truncate(p, keep)
                return "alive" if alive else "already exited"
            r = Proc(h, argv, d, "train", actions=[(1.0, cut)], timeout=2 * h.timeout).wait()
            if r.action_log and r.action_log[0] != "alive" and r.rc == 0:
                return Outcome(SKIP, "run ended before the truncation")
            return judge(r, MUST_REFUSE, train_finite(os.path.join(d, "run")), mention=re.escape(p))
        return fn
    for role in ("train", "val"):
        cuts = ((1024, "header-only"), (0, "empty")) + (((1024 + 2000, "2000-bytes"),)
                                                         if role == "train" else ())
        for keep, label in cuts:
            add("data.%s truncated while training (to %s)" % (role, label), truncated_while(role, keep),
                quick=(role == "train" and keep == 1024), expect=MUST_REFUSE, heavy=True)

    # prepare: hostile inputs and options (a file-size limit bounds what an endless input
    # could write).
    def prepare_case(label, make_inputs, opts, expect, fast=False, quick=False):
        def fn(h, d):
            ins = make_inputs(d)
            out = os.path.join(d, "prep")
            argv = [h.binary, "prepare", "--tokenizer", "byte", "--out", out] + opts + ins
            p = Proc(h, argv, d, "prepare", fsize_limit=16 << 20,
                     timeout=h.fast_timeout if fast else None).wait()
            return judge(p, expect, None)
        add("prepare %s" % label, fn, quick=quick, expect=expect, fast=fast)

    def text_in(d, data=None):
        p = os.path.join(d, "in.txt")
        write(p, data if data is not None else english_text(20000).encode())
        return [p]

    def fifo_in(d):
        p = os.path.join(d, "in.txt")
        os.mkfifo(p)
        return [p]

    def dir_in(d):
        p = os.path.join(d, "indir")
        os.mkdir(p)
        return [p]
    prepare_case("control", text_in, [], MUST_ACCEPT)
    prepare_case("input is a FIFO", fifo_in, [], MUST_REFUSE, fast=True, quick=True)
    prepare_case("input is a directory", dir_in, [], MUST_REFUSE, fast=True)
    prepare_case("input is /dev/zero", lambda d: ["/dev/zero"], [], MUST_REFUSE)
    prepare_case("input missing", lambda d: [os.path.join(d, "nope.txt")], [], MUST_REFUSE, fast=True)
    prepare_case("input empty", lambda d: text_in(d, b""), [], MAY_ACCEPT_ANY)
    prepare_case("input invalid UTF-8", lambda d: text_in(d, bytes(range(256)) * 40), [], MAY_ACCEPT_ANY)
    for v in ("nan", "inf", "-0.1", "1.5", "1"):
        prepare_case("--val-fraction %s" % v, text_in, ["--val-fraction", v], MUST_REFUSE)
    prepare_case("--val-fraction 0", text_in, ["--val-fraction", "0"], MAY_ACCEPT_ANY)

    def out_is_file(d):
        write(os.path.join(d, "prep"), b"x")
        return text_in(d)
    prepare_case("--out is a file", out_is_file, [], MUST_REFUSE, quick=True)

    def prepare_full(h, d):
        ins = text_in(d, english_text(200000).encode())
        out = os.path.join(d, "prep")
        argv = [h.binary, "prepare", "--tokenizer", "byte", "--out", out] + ins
        p = Proc(h, argv, d, "prepare", fsize_limit=64 << 10).wait()
        return judge(p, MUST_REFUSE, None, mention=r"train\.bin|val\.bin|prep|write")
    add("prepare: disk full (64 KiB per file)", prepare_full, expect=MUST_REFUSE)

    def convert_full(h, d):
        out = os.path.join(d, "out.safetensors")
        argv = [h.binary, "convert", os.path.join(h.fixture("ref")["ckpt"], "model.safetensors"),
                out, "--to", "f32"]
        p = Proc(h, argv, d, "convert", fsize_limit=64 << 10).wait()
        o = judge(p, MUST_REFUSE, None, mention=re.escape(out))
        if o.kind == PASS and os.path.exists(out):
            return Outcome(SILENT, "refused, but a partial %s was left" % out)
        return o
    add("convert: disk full (64 KiB per file)", convert_full, expect=MUST_REFUSE)

    # eval with sizes that cannot fit.
    # (--batches goes through eval_argv: passed twice, the CLI refuses the repeat instead.)
    for label, extra, batches, exp in [
            ("--batch-size 1048576", ["--batch-size", "1048576"], 1, MUST_REFUSE),
            ("--batches 1073741824", [], 1073741824, MAY_ACCEPT),
            ("--batch-size 0", ["--batch-size", "0"], 1, MUST_REFUSE),
            ("--batches -1", [], -1, MUST_REFUSE)]:
        def fn(h, d, extra=extra, batches=batches, exp=exp):
            p = h.run(h.eval_argv(h.copy_ckpt(d), batches=batches, extra=extra), d, "eval")
            return judge(p, exp, eval_finite)
        add("eval %s" % label, fn, expect=exp)
    return cases


# --------------------------------------------------------------------------------------
# Class 5: run folders.


def check_single_writer(run, procs, steps):
    """Exactly one writer accepted, the others refused well, metrics has 1..steps once."""
    crashes = [(i, crash_reason(p)) for i, p in enumerate(procs) if not p.timed_out and crash_reason(p)]
    if any(p.timed_out for p in procs):
        return Outcome(HANG, "writer(s) %s did not exit within %.0f s" % (
            [i for i, p in enumerate(procs) if p.timed_out], procs[0].timeout))
    if crashes:
        return Outcome(CRASH, "writer %d: %s" % crashes[0])
    winners = [i for i, p in enumerate(procs) if p.rc == 0]
    rows = metrics_lines(run)
    steps_seen = [r.get("step") for r in rows if "loss" in r]
    if len(winners) > 1:
        return Outcome(SILENT, "%d of %d writers exited 0; metrics.jsonl step lines: %s" % (
            len(winners), len(procs), short(str(steps_seen), 100)))
    for i, p in enumerate(procs):
        if p.rc != 0:
            bad = refusal_problem(p, mention=r"out_dir|in use|lock|another|busy|running|" + re.escape(run))
            if bad:
                return Outcome(POOR, "writer %d: %s" % (i, bad))
    if not winners:
        return Outcome(FALSE, "no writer completed: %s" % first_err(procs[0]))
    if steps_seen != list(range(1, steps + 1)):
        return Outcome(SILENT, "metrics.jsonl step lines %s, expected 1..%d once" % (
            short(str(steps_seen), 120), steps))
    fin = train_finite(run)(procs[winners[0]])
    return Outcome(SILENT, fin) if fin else ok()


def class_run_dir(h):
    cases = []

    def add(name, fn, quick=False, expect="", heavy=False):
        cases.append(Case("run_dir", name, fn, quick=quick, expect=expect, heavy=heavy))

    def concurrent(n, steps=40):
        def fn(h, d):
            run = os.path.join(d, "run")
            argv = h.train_argv(d, steps=steps, extra=["train.eval_every=10", "train.checkpoint_every=10"])
            procs = [Proc(h, argv, d, "w%d" % i) for i in range(n)]
            for p in procs:
                p.wait()
            return check_single_writer(run, procs, steps)
        return fn
    add("2 concurrent writers, one out_dir", concurrent(2), quick=True, expect=MUST_REFUSE, heavy=True)
    add("4 concurrent writers, one out_dir", concurrent(4), expect=MUST_REFUSE, heavy=True)

    def two_resumes(h, d):
        """Two resumes of one run folder at once."""
        run = h.copy_run(d, steps=(2,))
        argv = h.train_argv(d, steps=40, extra=["train.eval_every=10", "train.checkpoint_every=10"])
        argv += ["--resume", os.path.join(run, "checkpoints", "step-2")]
        procs = [Proc(h, argv, d, "w%d" % i) for i in range(2)]
        for p in procs:
            p.wait()
        return check_single_writer(run, procs, 40)
    add("2 concurrent resumes of one run folder", two_resumes, expect=MUST_REFUSE, heavy=True)

    def foreign(overwrite, what):
        def fn(h, d):
            if what == "run":
                run = h.copy_run(d, steps=(2, 4))
            else:
                run = os.path.join(d, "run")
                os.makedirs(run)
                if what == "metrics-only":
                    shutil.copy(os.path.join(h.fixture("ref")["run"], "metrics.jsonl"), run)
                elif what == "unrelated-file":
                    write(os.path.join(run, "notes.txt"), b"hello\n")
            argv = h.train_argv(d) + (["--overwrite"] if overwrite else [])
            p = h.run(argv, d, "train")
            if overwrite and p.rc != 0 and re.search(r"overwrite", p.stderr) and \
                    re.search(r"not expected|unknown|extras", p.stderr, re.I):
                return Outcome(UNSUPPORTED, "--overwrite is not an option yet: " + first_err(p))
            if what in ("empty", "unrelated-file") or overwrite:
                o = judge(p, MUST_ACCEPT if what == "empty" or overwrite else MAY_ACCEPT,
                          train_finite(run))
                if o.kind != PASS or p.rc != 0:
                    return o
                steps = [r.get("step") for r in metrics_lines(run) if "loss" in r]
                if steps != list(range(1, STEPS + 1)):
                    return Outcome(SILENT, "metrics.jsonl step lines %s, expected 1..%d once" % (
                        steps, STEPS))
                return o
            return judge(p, MUST_REFUSE, train_finite(run),
                         mention=r"overwrite|resume|exist|" + re.escape(run))
        return fn
    add("fresh run into another run's folder", foreign(False, "run"), quick=True, expect=MUST_REFUSE)
    add("fresh run into a folder holding metrics.jsonl", foreign(False, "metrics-only"),
        expect=MUST_REFUSE)
    add("fresh run into another run's folder --overwrite", foreign(True, "run"), expect=MUST_ACCEPT)
    add("fresh run into an empty existing folder", foreign(False, "empty"), expect=MUST_ACCEPT)
    add("fresh run into a folder with an unrelated file", foreign(False, "unrelated-file"),
        expect=MAY_ACCEPT)

    def out_dir_case(make, mention_fn=None):
        def fn(h, d):
            out = make(d)
            argv = h.train_argv(d, out=out)
            p = h.run(argv, d, "train")
            return judge(p, MUST_REFUSE, train_finite(os.path.join(d, out)),
                         mention=mention_fn(d) if mention_fn else None)
        return fn

    def file_out(d):
        write(os.path.join(d, "run"), b"x")
        return "run"

    def under_file(d):
        write(os.path.join(d, "f"), b"x")
        return "f/run"
    add("out_dir is a file", out_dir_case(file_out, lambda d: re.escape(os.path.join(d, "run"))),
        quick=True, expect=MUST_REFUSE)
    add("out_dir below a file", out_dir_case(under_file, lambda d: re.escape(os.path.join(d, "f"))),
        expect=MUST_REFUSE)
    add("out_dir=/dev/null", out_dir_case(lambda d: "/dev/null"), expect=MUST_REFUSE)
    add("out_dir=/proc/self", out_dir_case(lambda d: "/proc/self"), expect=MUST_REFUSE)

    def not_writable(h, d):
        if os.geteuid() == 0:
            return Outcome(SKIP, "running as root: permission bits do not apply")
        run = os.path.join(d, "run")
        os.makedirs(run)
        os.chmod(run, 0o555)
        try:
            p = h.run(h.train_argv(d), d, "train")
        finally:
            os.chmod(run, 0o755)
        return judge(p, MUST_REFUSE, train_finite(run), mention=re.escape(run))
    add("out_dir not writable (chmod 555)", not_writable, expect=MUST_REFUSE)

    def in_run(setup, resume=False, mention="metrics.jsonl", quick=False, label=""):
        def fn(h, d):
            if resume:
                run = h.copy_run(d)
            else:
                run = os.path.join(d, "run")
                os.makedirs(run)
            setup(run)
            argv = h.train_argv(d)
            if resume:
                argv += ["--resume", os.path.join(run, "checkpoints", "step-2")]
            p = h.run(argv, d, "train")
            return judge(p, MUST_REFUSE, train_finite(run, after_step=2 if resume else 0),
                         mention=mention)
        add(label, fn, quick=quick, expect=MUST_REFUSE)

    def link(name, target):
        return lambda run: (os.path.lexists(os.path.join(run, name)) and
                            os.remove(os.path.join(run, name)),
                            os.symlink(target, os.path.join(run, name)))
    # In a fresh run these are refused as "folder holds a run" (naming the folder is fine);
    # the resume variants reach the file itself.
    for resume in (False, True):
        pre = "resume: " if resume else "fresh run: "

        def m(name):
            return [name, "out_dir"]
        in_run(link("metrics.jsonl", "/dev/full"), resume=resume, mention=m("metrics.jsonl"),
               label=pre + "metrics.jsonl -> /dev/full")
        in_run(lambda run: (os.remove(os.path.join(run, "metrics.jsonl"))
                            if os.path.exists(os.path.join(run, "metrics.jsonl")) else None,
                            os.mkdir(os.path.join(run, "metrics.jsonl"))),
               resume=resume, mention=m("metrics.jsonl"), label=pre + "metrics.jsonl is a directory")
        in_run(lambda run: (os.remove(os.path.join(run, "config.toml"))
                            if os.path.exists(os.path.join(run, "config.toml")) else None,
                            os.mkdir(os.path.join(run, "config.toml"))),
               resume=resume, mention=m("config.toml"), label=pre + "config.toml is a directory")
        in_run(lambda run: os.mkdir(os.path.join(run, "summary.json")), resume=resume,
               mention=m("summary.json"), label=pre + "summary.json is a directory")
    in_run(lambda run: write(os.path.join(run, "checkpoints"), b"x"), mention=["checkpoints", "out_dir"],
           label="fresh run: checkpoints is a file")

    # A disk that fills up mid-run (per-file size limit): the run must fail, naming the file.
    def disk_full(limit, steps, extra, mention, label, quick=False):
        def fn(h, d):
            run = os.path.join(d, "run")
            p = Proc(h, h.train_argv(d, steps=steps, extra=extra), d, "train",
                     fsize_limit=limit).wait()
            o = judge(p, MUST_REFUSE, train_finite(run), mention=mention)
            if o.kind != PASS:
                return o
            ck = os.path.join(run, "checkpoints")
            for n in (os.listdir(ck) if os.path.isdir(ck) else []):
                if n.startswith("step-"):
                    have = set(os.listdir(os.path.join(ck, n)))
                    need = {"trainer.json", "model.safetensors", "optimizer.safetensors"}
                    if not need <= have:
                        return Outcome(SILENT, "incomplete checkpoint %s left (has %s)" % (
                            n, sorted(have)))
            return o
        add(label, fn, quick=quick, expect=MUST_REFUSE)
    disk_full(4096, 60, ["train.eval_every=0", "train.checkpoint_every=0"], "metrics.jsonl",
              "disk full mid-run: metrics.jsonl write fails (4 KiB per file)", quick=True)
    disk_full(64 << 10, STEPS, [], r"model\.safetensors|optimizer\.safetensors|checkpoint",
              "disk full mid-run: checkpoint write fails (64 KiB per file)")
    return cases


# --------------------------------------------------------------------------------------
# Class 6: environment (checkpoint folders, threads, FP8LM_ISA, stdout).


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def class_env(h):
    cases = []

    def add(name, fn, quick=False, expect="", fast=False):
        cases.append(Case("env", name, fn, quick=quick, expect=expect, fast=fast))

    # A checkpoint file replaced by a FIFO / directory / /dev/zero / removed.
    def ckpt_file_case(file, kind, cmd, expect):
        def fn(h, d):
            run = h.copy_run(d) if cmd == "resume" else None
            ck = os.path.join(run, "checkpoints", "step-2") if run else h.copy_ckpt(d)
            p = os.path.join(ck, file)
            os.remove(p)
            if kind == "fifo":
                os.mkfifo(p)
            elif kind == "directory":
                os.mkdir(p)
            elif kind == "/dev/zero":
                os.symlink("/dev/zero", p)
            elif kind == "/dev/full":
                os.symlink("/dev/full", p)
            return h.checkpoint_cmd(cmd, d, ck, run, expect, fast=True,
                                    mention=re.escape(file) if expect == MUST_REFUSE else None)
        return fn

    readers = {"trainer.json": CKPT_CMDS, "optimizer.safetensors": ("eval", "resume"),
               "model.safetensors": ("sample",)}
    for file, users in readers.items():
        for kind in ("fifo", "missing", "directory", "/dev/zero"):
            for cmd in CKPT_CMDS:
                exp = MUST_REFUSE if cmd in users else MAY_ACCEPT
                add("%s is %s :: %s" % (file, kind, cmd), ckpt_file_case(file, kind, cmd, exp),
                    quick=(kind == "fifo" and cmd in ("eval", "sample") and cmd in users),
                    expect=exp, fast=True)
    add("trainer.json is /dev/full :: eval", ckpt_file_case("trainer.json", "/dev/full", "eval",
                                                           MUST_REFUSE), expect=MUST_REFUSE, fast=True)

    # Checkpoint paths and run folders.
    def ckpt_path_case(make, cmd, expect=MUST_REFUSE, quick=False, label=""):
        def fn(h, d):
            path = make(h, d)
            if cmd == "resume":
                argv = h.train_argv(d) + ["--resume", path]
                p = h.run(argv, d, "resume", timeout=h.fast_timeout)
                return judge(p, expect, train_finite(os.path.join(d, "run")))
            argv = h.eval_argv(path) if cmd == "eval" else h.sample_argv(path)
            p = h.run(argv, d, cmd, timeout=h.fast_timeout)
            return judge(p, expect, eval_finite if cmd == "eval" else None)
        add("%s :: %s" % (label, cmd), fn, quick=quick, expect=expect, fast=True)

    def empty_dir(h, d):
        os.mkdir(os.path.join(d, "e"))
        return os.path.join(d, "e")

    def run_with(names):
        def make(h, d):
            run = h.copy_run(d, steps=())
            for n in names:
                src = h.fixture("ref")["ckpt"]
                if n.endswith("/"):
                    os.makedirs(os.path.join(run, "checkpoints", n))
                else:
                    shutil.copytree(src, os.path.join(run, "checkpoints", n))
                    if n.startswith("."):
                        continue
            return run
        return make

    def run_with_incomplete(h, d):
        run = h.copy_run(d, steps=())
        ck = os.path.join(run, "checkpoints", "step-4")
        shutil.copytree(h.fixture("ref")["ckpt4"], ck)
        os.remove(os.path.join(ck, "optimizer.safetensors"))
        return run

    def trainer_json_dir(h, d):
        run = h.copy_run(d, steps=())
        os.makedirs(os.path.join(run, "checkpoints", "step-4", "trainer.json"))
        return run

    def file_path(h, d):
        write(os.path.join(d, "f"), b"x")
        return os.path.join(d, "f")

    paths = [
        ("checkpoint path missing", lambda h, d: os.path.join(d, "nope"), MUST_REFUSE),
        ("checkpoint path is a file", file_path, MUST_REFUSE),
        ("checkpoint path is an empty folder", empty_dir, MUST_REFUSE),
        ("run folder with empty checkpoints/", run_with([]), MUST_REFUSE),
        ("run folder with only a .tmp checkpoint", run_with([".step-4.tmp-123"]), MUST_REFUSE),
        ("run folder with step-abc", run_with(["step-abc"]), MUST_REFUSE),
        ("run folder with step-99999999999999999999", run_with(["step-99999999999999999999"]),
         MUST_REFUSE),
        ("run folder with step--1", run_with(["step--1"]), MUST_REFUSE),
        ("run folder whose latest checkpoint lacks optimizer.safetensors", run_with_incomplete,
         MUST_REFUSE),
        ("run folder whose step-4/trainer.json is a directory", trainer_json_dir, MUST_REFUSE),
    ]
    for label, make, exp in paths:
        for cmd in CKPT_CMDS:
            e = exp
            if "lacks optimizer" in label and cmd == "sample":
                e = MAY_ACCEPT
            ckpt_path_case(make, cmd, e, quick=label == "checkpoint path is a file" and cmd == "eval",
                           label=label)

    # Threads.
    for label, argv_fn, exp in [
            ("--threads 0 train", lambda h, d: [h.binary, "--threads", "0"] + h.train_argv(d)[1:], MUST_REFUSE),
            ("--threads 100000 train", lambda h, d: [h.binary, "--threads", "100000"] + h.train_argv(d)[1:],
             MUST_REFUSE),
            ("--threads -1 eval", lambda h, d: [h.binary, "--threads", "-1"] + h.eval_argv(h.copy_ckpt(d))[3:],
             MUST_REFUSE),
            ("--threads abc eval", lambda h, d: [h.binary, "--threads", "abc"] + h.eval_argv(h.copy_ckpt(d))[3:],
             MUST_REFUSE),
            ("--threads 5000 eval", lambda h, d: [h.binary, "--threads", "5000"] + h.eval_argv(h.copy_ckpt(d))[3:],
             MAY_ACCEPT),
            ("--threads 4096 eval", lambda h, d: [h.binary, "--threads", "4096"] + h.eval_argv(h.copy_ckpt(d))[3:],
             MAY_ACCEPT)]:
        def fn(h, d, argv_fn=argv_fn, exp=exp, label=label):
            p = h.run(argv_fn(h, d), d, "p")
            fin = eval_finite if "eval" in label else train_finite(os.path.join(d, "run"))
            return judge(p, exp, fin, mention="threads" if exp == MUST_REFUSE else None)
        add(label, fn, quick=label.startswith("--threads 0"), expect=exp)

    # Environment variables read at start-up: a bad value is refused by name.
    def env_cases(var, values, cmds, quick):
        for val, exp in values:
            for cmd in cmds:
                def fn(h, d, val=val, exp=exp, cmd=cmd):
                    if cmd == "train":
                        argv, fin = h.train_argv(d), train_finite(os.path.join(d, "run"))
                    elif cmd == "eval":
                        argv, fin = h.eval_argv(h.copy_ckpt(d)), eval_finite
                    else:
                        argv = [h.binary, "inspect", os.path.join(h.fixture("ref")["ckpt"], "model.safetensors")]
                        fin = None
                    p = h.run(argv, d, cmd, env_extra={var: val})
                    return judge(p, exp, fin, mention=var if exp == MUST_REFUSE else None)
                add("%s=%r :: %s" % (var, val, cmd), fn, expect=exp, quick=quick(val, cmd))

    has512 = "avx512f" in cpu_flags()
    has_dot = has512 and "avx512_bf16" in cpu_flags()
    env_cases("FP8LM_ISA",
              [("bogus", MUST_REFUSE), ("avx512", MAY_ACCEPT if has512 else MUST_REFUSE),
               ("avx512bf16", MAY_ACCEPT if has_dot else MUST_REFUSE),
               ("AVX2", MAY_ACCEPT), ("scalar", MUST_ACCEPT), ("", MUST_ACCEPT),
               ("avx2 ", MUST_REFUSE)],
              ("train", "eval", "inspect"),
              lambda val, cmd: cmd == "eval" and val in ("bogus", "avx512", "avx512bf16"))
    # The GEMM's packed-A block budget, KiB in [16, 1024].
    env_cases("FP8LM_GEMM_A_KIB",
              [("bogus", MUST_REFUSE), ("0", MUST_REFUSE), ("2048", MUST_REFUSE),
               ("64", MUST_ACCEPT), ("", MUST_ACCEPT)],
              ("train", "inspect"),
              lambda val, cmd: cmd == "train" and val in ("bogus", "64"))

    # Output to a full device: the printed result is lost, so exit 0 would be a lie.
    def full_stdout(cmd):
        def fn(h, d):
            if cmd == "eval":
                argv = h.eval_argv(h.copy_ckpt(d))
            elif cmd == "inspect":
                argv = [h.binary, "inspect", os.path.join(h.fixture("ref")["ckpt"], "model.safetensors")]
            elif cmd == "sample":
                argv = h.sample_argv(h.copy_ckpt(d))
            else:
                argv = h.train_argv(d)
            p = h.run(argv, d, cmd, stdout_path="/dev/full")
            if cmd == "train":  # its product is the run folder; the console is a courtesy
                return judge(p, MAY_ACCEPT, train_finite(os.path.join(d, "run")))
            return judge(p, MUST_REFUSE, None)
        return fn
    for cmd in ("eval", "inspect", "sample", "train"):
        add("stdout is /dev/full :: %s" % cmd, full_stdout(cmd),
            expect=MAY_ACCEPT if cmd == "train" else MUST_REFUSE,
            quick=cmd == "eval")
    return cases


# --------------------------------------------------------------------------------------
# Class 7: MPI.


def class_mpi(h):
    cases = []

    def add(name, fn, quick=False, expect=""):
        cases.append(Case("mpi", name, fn, quick=quick, expect=expect, heavy=True))

    def mpi_env():
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                "OMPI_MCA_rmaps_base_oversubscribe": "1"}

    MPI_FLAGS = ["--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader"]

    def mpmd(h, d, extra_a, extra_b, steps=STEPS, out_b=None):
        t = h.fixture("tokens")
        run = os.path.join(d, "run")
        a = h.sets(t["train"], t["val"], run, steps, extra_a)
        b = h.sets(t["train"], t["val"], out_b or run, steps, extra_b)
        return [h.mpirun, "-np", "1"] + MPI_FLAGS + [h.binary, "train"] + a + \
            [":", "-np", "1", h.binary, "train"] + b

    def need_mpi(h):
        return None if h.mpirun else Outcome(SKIP, "no mpirun")

    disagree = r"disagree|differ|mismatch|same|inconsistent|all ranks|every rank"
    for label, a, b, quick in [
            ("precision.level fp32 vs O2", ["precision.level=fp32"], ["precision.level=O2"], True),
            ("precision.level O2 vs O3", ["precision.level=O2"], ["precision.level=O3"], True),
            ("precision.level bf16 vs O1", ["precision.level=bf16"], ["precision.level=O1"], False),
            ("train.batch_size 4 vs 2", ["train.batch_size=4"], ["train.batch_size=2"], False),
            ("train.seed 1 vs 2", ["train.seed=1"], ["train.seed=2"], False),
            ("train.lr 1e-3 vs 1e-2", ["train.lr=0.001"], ["train.lr=0.01"], False),
            ("train.grad_accum 1 vs 2", ["train.grad_accum=1"], ["train.grad_accum=2"], False),
            ("train.steps 4 vs 6", ["train.steps=4"], ["train.steps=6"], True),
            ("model.n_layer 2 vs 1", ["model.n_layer=2"], ["model.n_layer=1"], False),
            ("model.seq_len 32 vs 16", ["model.seq_len=32"], ["model.seq_len=16"], False),
            ("precision.amax_window 16 vs 4", ["precision.amax_window=16"], ["precision.amax_window=4"],
             False),
            ("precision.grad_scaling auto vs post", ["precision.grad_scaling=auto"],
             ["precision.grad_scaling=post"], False),
            ("train.out_dir differs", [], None, False)]:
        def fn(h, d, a=a, b=b, label=label):
            s = need_mpi(h)
            if s:
                return s
            if b is None:
                argv = mpmd(h, d, [], [], out_b=os.path.join(d, "run_b"))
            else:
                # The later --set wins: pass the rank's value after the common ones.
                argv = mpmd(h, d, a, b)
            p = h.run(argv, d, "mpi", env_extra=mpi_env())
            o = judge(p, MUST_REFUSE, train_finite(os.path.join(d, "run")), mention=disagree, mpi=True)
            if o.kind == PASS:
                ranks = set(re.findall(r"rank (\d+) of", p.stderr))
                if len(ranks) < 2:
                    o.detail = "only rank(s) %s reported" % sorted(ranks)
            return o
        add("ranks disagree: %s" % label, fn, quick=quick, expect=MUST_REFUSE)

    def control(h, d):
        s = need_mpi(h)
        if s:
            return s
        p = h.run(mpmd(h, d, [], []), d, "mpi", env_extra=mpi_env())
        return judge(p, MUST_ACCEPT, train_finite(os.path.join(d, "run")), mpi=True)
    add("control: 2 ranks, same config", control, quick=True, expect=MUST_ACCEPT)

    def stop_or_kill(sig, label):
        def fn(h, d):
            s = need_mpi(h)
            if s:
                return s
            t = h.fixture("tokens")
            run = os.path.join(d, "run")
            sets = h.sets(t["train"], t["big"], run, 100000,
                          ["train.comm_timeout=5", "train.eval_every=0", "train.checkpoint_every=0"])
            argv = [h.mpirun, "-np", "2"] + MPI_FLAGS + [h.binary, "train"] + sets

            def act(proc):
                comm = os.path.basename(h.binary)[:15]  # /proc/PID/comm keeps 15 characters
                ranks = [c for c in session_members(proc.pid) if proc_comm(c[0]) == comm]
                ranks.sort()
                if not ranks:
                    return "no rank found"
                os.kill(ranks[-1][0], sig)
                return "sent %s to pid %d" % (signame(sig), ranks[-1][0])
            p = Proc(h, argv, d, "mpi", env_extra=mpi_env(), actions=[(2.5, act)]).wait()
            if "comm_timeout" in p.stderr and re.search(r"unknown key", p.stderr):
                return Outcome(UNSUPPORTED, "train.comm_timeout is an unknown key: " + first_err(p))
            if p.action_log and not p.action_log[0].startswith("sent"):
                return Outcome(SKIP, "could not signal a rank: %s (exit %s)" % (p.action_log[0], p.rc))
            if p.timed_out:
                return Outcome(HANG, "job did not end within %.0f s after %s" % (p.timeout, p.action_log))
            if p.rc == 0:
                return Outcome(SILENT, "exit 0 although a rank was %s" % label)
            c = None if sig == signal.SIGKILL else crash_reason(p)
            if c:
                return Outcome(CRASH, c)
            lines = [l for l in err_lines(p) if l.startswith("fp8lm")]
            if sig == signal.SIGKILL:  # the dead rank cannot speak: the launcher may name it
                lines = lines or [l for l in err_lines(p) if re.search(r"rank \d", l)]
            if not lines:
                return Outcome(POOR, "job ended (exit %d) without an fp8lm error line: %s" % (
                    p.rc, first_err(p)))
            if not re.search(r"rank \d", "\n".join(lines)):
                return Outcome(POOR, "error does not name a rank: " + short(lines[0]))
            return ok()
        return fn
    add("a rank stopped (SIGSTOP) mid-run, comm_timeout=5", stop_or_kill(signal.SIGSTOP, "stopped"),
        quick=True, expect=MUST_REFUSE)
    add("a rank killed (SIGKILL) mid-run", stop_or_kill(signal.SIGKILL, "killed"), expect=MUST_REFUSE)
    return cases


BUILDERS = {"trainer_json": class_trainer_json, "safetensors": class_safetensors,
            "config": class_config, "tokens": class_tokens, "run_dir": class_run_dir,
            "env": class_env, "mpi": class_mpi}


# --------------------------------------------------------------------------------------
# Driver.


def run_case(h, case, index):
    d = os.path.join(h.workdir, "cases", case.cls, "%04d-%s" % (index, safe_name(case.name)))
    os.makedirs(d, exist_ok=True)
    t0 = time.monotonic()
    try:
        o = case.fn(h, d)
    except HarnessError:
        raise
    except Exception as e:  # a harness bug must show, not hide a case
        o = Outcome("harness-error", "%s: %s" % (type(e).__name__, short(str(e), 160)))
        if h.verbose:
            traceback.print_exc()
    o.seconds = time.monotonic() - t0
    o.dir = d
    if not h.keep:
        shutil.rmtree(d, ignore_errors=True)
    return o


def main():
    ap = argparse.ArgumentParser(description="Hostile-input harness for fp8lm.")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "fp8lm"))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per process (default 60)")
    ap.add_argument("--class", dest="classes", action="append", default=[],
                    help="run one class (repeatable, or comma-separated): " + ", ".join(CLASSES))
    ap.add_argument("--case", action="append", default=[],
                    help="only cases whose 'class/name' contains this text (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--quick", action="store_true", help="a representative subset (CI)")
    ap.add_argument("--jobs", type=int, default=2, help="cases at once (default 2)")
    ap.add_argument("--workdir", help="folder for fixtures and case folders (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep every case folder")
    ap.add_argument("--mem-limit-mib", type=int, default=4096,
                    help="kill a case whose processes use more resident memory (default 4096)")
    ap.add_argument("--case-timeout", type=float, default=None,
                    help="wall-clock seconds for one whole case (all its processes, judging "
                         "and fixtures); past it the case counts as a hang and the run moves on "
                         "(default max(300, 4 x --timeout + 60))")
    ap.add_argument("--report", help="also write every result as JSON to this file")
    ap.add_argument("--verbose", "-v", action="store_true", help="print every case as it ends")
    args = ap.parse_args()

    classes = []
    for c in args.classes:
        classes += [x.strip() for x in c.split(",") if x.strip()]
    for c in classes:
        if c not in CLASSES:
            ap.error("unknown class %r (known: %s)" % (c, ", ".join(CLASSES)))
    classes = classes or list(CLASSES)

    cases = []
    for c in classes:
        cases += BUILDERS[c](None)
    if args.quick:
        cases = [c for c in cases if c.quick]
    if args.case:
        cases = [c for c in cases if any(s in "%s/%s" % (c.cls, c.name) for s in args.case)]
    if args.list:
        for c in cases:
            print("%-13s %-18s %s%s" % (c.cls, c.expect or "-", c.name, "  [quick]" if c.quick else ""))
        print("%d cases" % len(cases))
        return 0

    if not os.access(args.binary, os.X_OK):
        print("hostile: no executable binary at %s" % args.binary, file=sys.stderr)
        return 2
    made_workdir = args.workdir is None
    args.workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="hostile-"))
    os.makedirs(args.workdir, exist_ok=True)
    h = Harness(args)

    results = [None] * len(cases)
    lock = threading.Condition()  # guards results/done/finished; notified when a case ends
    done = [0]
    finished = set()
    t_start = time.monotonic()

    def record(i, o):
        """Stores case i's outcome once (a case the watchdog gave up on stays a hang);
        False when it already had one."""
        with lock:
            finished.add(i)
            lock.notify_all()
            if results[i] is not None:
                return False
            results[i] = o
            done[0] += 1
            c = cases[i]
            if o.kind in FAIL_KINDS or o.kind == "harness-error" or args.verbose:
                print("  [%d/%d] %-11s %s/%s: %s (%.1f s)" % (
                    done[0], len(cases), o.kind, c.cls, c.name, o.detail, o.seconds),
                    file=sys.stderr, flush=True)
            elif done[0] % 50 == 0:
                print("  [%d/%d] %.0f s" % (done[0], len(cases), time.monotonic() - t_start),
                      file=sys.stderr, flush=True)
            return True

    def one(i):
        h._tls.case = i
        try:
            o = run_case(h, cases[i], i)
        except HarnessError as e:
            o = Outcome("harness-error", str(e))
            o.seconds, o.dir = 0.0, ""
        except BaseException as e:  # never leave a case without an outcome
            o = Outcome("harness-error", "%s: %s" % (type(e).__name__, short(str(e), 160)))
            o.seconds, o.dir = 0.0, ""
        record(i, o)

    def where(thread):
        """file:line in function, for the innermost harness frame a thread is in."""
        frame = sys._current_frames().get(thread.ident)
        if frame is None:
            return "?"
        stack = traceback.extract_stack(frame)
        mine = [f for f in stack if f.filename == __file__] or stack
        spots = [stack[-1]] + ([mine[-1]] if mine[-1] is not stack[-1] else [])
        return " < ".join("%s:%d in %s" % (os.path.basename(f.filename), f.lineno, f.name)
                          for f in spots)

    def run_group(indices, width):
        """Runs cases width at once, each in its own thread; a case still running after
        --case-timeout seconds is recorded as a hang, its processes are killed, and the
        run moves on without it (its thread is left behind as a daemon).

        Cases are charged on a clock that advances at most TICK_MAX_S per scheduler tick,
        so a stretch in which the whole harness was frozen (a thread holding the GIL) is
        reported once and not charged to the innocent cases running beside it."""
        pending = list(reversed(indices))
        running = {}  # case index -> (thread, charged clock at start, wall clock at start)
        last = time.monotonic()
        while pending or running:
            while pending and len(running) < width:
                i = pending.pop()
                t = threading.Thread(target=one, args=(i,), daemon=True,
                                     name="case-%d" % i)
                running[i] = (t, clock[0], time.monotonic())
                t.start()
            with lock:
                if not (finished & set(running)):
                    lock.wait(timeout=1.0)
                ended = finished & set(running)
            for i in ended:
                running.pop(i)[0].join(timeout=5)
            now = time.monotonic()
            gap, last = now - last, now
            clock[0] += min(gap, TICK_MAX_S)
            if gap > FROZEN_WARN_S:
                print("hostile: warning: the harness itself was frozen for %.0f s (no thread "
                      "could run; running: %s)" % (gap, ", ".join(
                          "%s/%s" % (cases[i].cls, cases[i].name) for i in running) or "-"),
                      file=sys.stderr, flush=True)
            for i, (t, c0, w0) in list(running.items()):
                if clock[0] - c0 < case_timeout:
                    continue
                del running[i]
                with lock:
                    if results[i] is not None:  # it ended just now
                        continue
                    o = Outcome(HANG, "harness watchdog: case still running after %.0f s (at %s), "
                                      "skipped" % (now - w0, where(t)))
                    o.seconds, o.dir = now - w0, ""
                    record(i, o)  # under lock: the case's own outcome now comes too late
                killed = h.kill_case(i)
                if killed:
                    o.detail += "; %d process session(s) killed" % killed
                abandoned.append(t)
            # Last resort for a stall no Python thread can act on (a C call holding the GIL,
            # as the quadratic regexes did): faulthandler's own thread then prints every
            # thread's stack, again every STALL_DUMP_S seconds, instead of staying silent.
            faulthandler.dump_traceback_later(STALL_DUMP_S, repeat=True, file=sys.stderr)

    light = [i for i, c in enumerate(cases) if not c.heavy]
    heavy = [i for i, c in enumerate(cases) if c.heavy]
    case_timeout = args.case_timeout or max(300.0, 4 * h.timeout + 60)
    abandoned = []
    clock = [0.0]  # seconds charged to cases (see run_group)
    print("hostile: %d cases (%d light at %d at once, %d heavy one at a time) against %s; workdir %s" % (
        len(cases), len(light), args.jobs, len(heavy), h.binary, args.workdir),
        file=sys.stderr, flush=True)
    try:
        run_group(light, max(1, args.jobs))
        run_group(heavy, 1)
    except KeyboardInterrupt:
        faulthandler.cancel_dump_traceback_later()
        print("hostile: interrupted", file=sys.stderr)
        for i in range(len(cases)):
            h.kill_case(i)
    if abandoned:
        print("hostile: the watchdog gave up on %d case(s); their threads are left behind" %
              len(abandoned), file=sys.stderr, flush=True)

    # Report.
    counts = {k: 0 for k in FAIL_KINDS}
    counts["harness-error"] = counts["skip"] = counts["pass"] = 0
    lines = []
    for c, o in zip(cases, results):
        if o is None:
            continue
        counts[o.kind] = counts.get(o.kind, 0) + 1
        if o.kind in FAIL_KINDS or o.kind == "harness-error":
            lines.append((CLASSES.index(c.cls), c.name, "%-11s %-13s %s: %s" % (o.kind, c.cls, c.name, o.detail)))
    for _, _, l in sorted(lines):
        print(l)
    ran = sum(1 for o in results if o is not None)
    skipped = counts["skip"]
    summary = "hostile: %d cases, %d crashes, %d hangs, %d silent acceptances" % (
        ran, counts[CRASH], counts[HANG], counts[SILENT])
    summary += ", %d poor refusals, %d false refusals, %d not yet supported" % (
        counts[POOR], counts[FALSE], counts[UNSUPPORTED])
    if counts["harness-error"]:
        summary += ", %d harness errors" % counts["harness-error"]
    if skipped:
        summary += " (%d skipped)" % skipped
    summary += " [%.0f s]" % (time.monotonic() - t_start)
    print(summary)
    if args.report:
        with open(args.report, "w") as f:
            json.dump([{"class": c.cls, "case": c.name, "expect": c.expect, "kind": o.kind,
                        "detail": o.detail, "seconds": round(o.seconds, 2)}
                       for c, o in zip(cases, results) if o is not None], f, indent=1)
    if args.keep:
        print("hostile: case folders kept in %s" % args.workdir, file=sys.stderr)
    elif made_workdir:
        shutil.rmtree(args.workdir, ignore_errors=True)
    faulthandler.cancel_dump_traceback_later()
    bad = sum(counts[k] for k in FAIL_KINDS) + counts["harness-error"]
    return 1 if bad or ran < len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
