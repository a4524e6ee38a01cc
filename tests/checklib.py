"""Shared by the Python check scripts under tests/: the binary and model CTest passes in the
environment, check() that records a failure and goes on (so one run reports every broken
behaviour), finish() that prints the verdict and sets the exit code, and run() that
raises with the command's output when a step that must work does not.

A script in tests/DIR imports it with
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from checklib import ...
"""
import json
import os
import subprocess
import sys

QBIN = os.environ["QSHARD_BIN"]
MODEL = os.environ["QSHARD_TEST_MODEL"]
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "pml", "ob1",
          "--mca", "btl", "self,vader"]
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)


def verdict():
    """0 when every check passed, else 1, after printing the verdict."""
    if failures:
        print(f"{len(failures)} failure(s)", flush=True)
        return 1
    print("PASS", flush=True)
    return 0


def finish():
    sys.exit(verdict())


def with_env(extra=None):
    """os.environ with `extra` added (a test hook such as QSHARD_TEST_KILL_AT)."""
    e = dict(os.environ)
    e.update(extra or {})
    return e


def run(cmd, env=None, cwd=None, timeout=None):
    """stdout of a command that must succeed; raises with both streams' tails otherwise."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=with_env(env), cwd=cwd, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def attempt(cmd, env=None, cwd=None, timeout=600):
    """A command that may fail on purpose: its CompletedProcess, `env` added to os.environ."""
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=with_env(env), cwd=cwd, timeout=timeout)


def last_json(stdout):
    """The --json line, which qshard prints last."""
    return json.loads(stdout.strip().splitlines()[-1])


def calib_args(n=32, seqlen=256, model=None):
    return ["--calib", os.path.join(model or MODEL, "text", "calib.txt"), "--n-calib", str(n),
            "--calib-seqlen", str(seqlen)]


def eval_args(seqlen=256, windows=32, model=None):
    return ["--text", os.path.join(model or MODEL, "text", "eval.txt"), "--seqlen", str(seqlen),
            "--max-windows", str(windows), "--json", "--quiet"]
