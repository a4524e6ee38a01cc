"""Shared by the tests/e2e check scripts: the binary and model CTest passes in the
environment, check() that records a failure and goes on (so one run reports every
broken behaviour), and finish() that prints the verdict and sets the exit code."""
import os
import sys

QBIN = os.environ["QSHARD_BIN"]
MODEL = os.environ["QSHARD_TEST_MODEL"]
MPIRUN = ["mpirun", "--oversubscribe", "--mca", "pml", "ob1", "--mca", "btl", "self,vader"]
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)


def finish():
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("PASS")
