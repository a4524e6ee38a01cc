"""SIGTERM and SIGINT stop a quantize run at a safe point: one line saying how many layers
are saved, exit code 128+signal, and the same command resumes it to exactly the bytes of
an uninterrupted run. Signals come from outside (kill) while layers are slowed down by
QSHARD_TEST_LAYER_SECONDS (src/core/test_hooks.h), and under mpirun -np 2 from inside one
rank (QSHARD_TEST_SIGNAL_AT, QSHARD_TEST_KILL_RANK=1: the rank that got it must stop both),
and as a SIGTERM to mpirun itself (it passes it on to the ranks). The Slurm cases (scancel,
a time limit, requeue) are in tests/launch/check_slurm.sh."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, MPIRUN, attempt as run, check, finish, with_env as env  # noqa: E402


def quantize_cmd(out):
    return [QBIN, "quantize", "--model", MODEL, "--out", out, "--calib", os.path.join(MODEL, "text", "calib.txt"),
            "--n-calib", "16", "--calib-seqlen", "64", "--quiet"]


def segments(out):
    try:
        return len(json.load(open(os.path.join(out, ".qshard", "manifest.json")))["segments"])
    except (OSError, ValueError, KeyError):
        return 0


def digest(out):
    """SHA256SUMS without the report's line (its timings differ between runs)."""
    return [l for l in open(os.path.join(out, "SHA256SUMS")).read().splitlines()
            if not l.endswith("  quantize_report.json")]


def stopped_line(r, sig, layers):
    # mpirun adds its own box about the ranks' non-zero exit; qshard's lines are ours.
    err = [l for l in r.stderr.strip().splitlines() if l.startswith("qshard")]
    want = f"qshard: stopped by {sig} at a safe point: {layers} of 4 layers are saved in "
    return len(err) == 1 and err[0].startswith(want) and "run the same command again to resume" in err[0]


def signal_from_outside(t, reference, sig, name, launcher=()):
    """Starts a slowed run, signals it once the first layer is saved, resumes it."""
    out = os.path.join(t, "out-" + name)
    cmd = list(launcher) + (["-x", "QSHARD_TEST_LAYER_SECONDS"] if launcher else []) + quantize_cmd(out)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env({"QSHARD_TEST_LAYER_SECONDS": "3"}))
    while segments(out) < 1 and p.poll() is None:
        time.sleep(0.05)
    t0 = time.time()
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=120)
    took = time.time() - t0
    r = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
    done = segments(out)
    # mpirun reports its own status; the ranks' code is 128+signal.
    rc_ok = p.returncode == 128 + sig if not launcher else p.returncode != 0
    sig_name = signal.Signals(sig).name
    check(rc_ok and 1 <= done < 4 and stopped_line(r, sig_name, done) and not os.path.exists(os.path.join(out, "config.json")),
          f"{name}: {sig_name} stops it after {done} layer(s) in {took:.1f} s, one line, rc {p.returncode} "
          f"({stderr.strip()[-400:]})")
    r = run(list(launcher) + quantize_cmd(out))
    check(r.returncode == 0 and digest(out) == reference,
          f"{name}: the same command resumes it to the uninterrupted run's bytes ({r.stderr.strip()[-300:]})")


def main():
    t = tempfile.mkdtemp(prefix="qshard-stop-")
    try:
        ref1 = os.path.join(t, "ref1")
        r = run(quantize_cmd(ref1))
        check(r.returncode == 0, f"uninterrupted 1-rank run ({r.stderr.strip()[-300:]})")
        reference1 = digest(ref1)
        signal_from_outside(t, reference1, signal.SIGTERM, "1 rank, SIGTERM")
        signal_from_outside(t, reference1, signal.SIGINT, "1 rank, SIGINT")

        mpi = MPIRUN + ["-np", "2"]
        ref2 = os.path.join(t, "ref2")
        r = run(mpi + quantize_cmd(ref2))
        check(r.returncode == 0, f"uninterrupted 2-rank run ({r.stderr.strip()[-300:]})")
        reference2 = digest(ref2)
        # Rank 1 alone gets SIGTERM as it finishes layer 1: both ranks stop before layer 2.
        out = os.path.join(t, "out-mpi-rank1")
        r = run(mpi + ["-x", "QSHARD_TEST_SIGNAL_AT", "-x", "QSHARD_TEST_KILL_RANK"] + quantize_cmd(out),
                {"QSHARD_TEST_SIGNAL_AT": "layer-1", "QSHARD_TEST_KILL_RANK": "1"})
        check(segments(out) == 2 and stopped_line(r, "SIGTERM", 2),
              f"2 ranks, SIGTERM on rank 1 only: both stop after layer 1, one line (rc {r.returncode}: "
              f"{r.stderr.strip()[-400:]})")
        r = run(mpi + quantize_cmd(out))
        check(r.returncode == 0 and digest(out) == reference2,
              f"2 ranks: the same command resumes it to the uninterrupted run's bytes ({r.stderr.strip()[-300:]})")
        signal_from_outside(t, reference2, signal.SIGTERM, "2 ranks, SIGTERM to mpirun", mpi)
    finally:
        shutil.rmtree(t, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
