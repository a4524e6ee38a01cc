"""A finished quantize output verifies against the SHA-256 recorded when it was written:
`qshard verify OUT` and `sha256sum -c SHA256SUMS` accept it; a damaged, missing or extra
file is named by verify (exit 2) and by a rerun of the same command, which no longer
answers "nothing to do"; --overwrite redoes the output, which verifies again."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, attempt as run, check, finish  # noqa: E402


def main():
    t = tempfile.mkdtemp(prefix="qshard-verify-")
    try:
        out = os.path.join(t, "out")
        cmd = [QBIN, "quantize", "--model", MODEL, "--out", out, "--calib", os.path.join(MODEL, "text", "calib.txt"),
               "--n-calib", "16", "--calib-seqlen", "64", "--max-shard-size", "0.004", "--quiet"]
        r = run(cmd)
        check(r.returncode == 0, f"quantize finishes ({r.stderr.strip()[-300:]})")
        r = run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=out)
        names = sorted(n for n in os.listdir(out) if not n.startswith(".") and n != "SHA256SUMS")
        check(r.returncode == 0 and r.stdout.count(": OK") == len(names),
              f"sha256sum -c accepts SHA256SUMS, {len(names)} files ({r.stdout.strip()[-200:]} {r.stderr.strip()})")
        r = run([QBIN, "verify", out])
        check(r.returncode == 0 and f"{len(names)} files match" in r.stdout, f"verify OUT: intact ({r.stdout.strip()})")
        r = run(cmd)
        check(r.returncode == 0 and "nothing to do" in r.stdout, "the same command again: nothing to do")

        shard = os.path.join(out, "model-00001-of-00002.safetensors")
        with open(shard, "r+b") as f:  # one byte deep in the tensor data
            f.seek(os.path.getsize(shard) - 10)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 1]))
        os.remove(os.path.join(out, "tokenizer.model"))
        open(os.path.join(out, "notes.txt"), "w").write("not from qshard\n")
        r = run([QBIN, "verify", out])
        err = r.stderr.strip()
        check(r.returncode == 2 and err.count("\n") == 0 and err.startswith("qshard: error:")
              and "model-00001-of-00002.safetensors differs" in err and "tokenizer.model is missing" in err
              and "notes.txt is extra" in err, f"verify names the damaged, missing and extra file ({err})")
        check(len(r.stdout.strip().splitlines()) == 3, f"verify prints one line per problem ({r.stdout.strip()})")
        r = run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out)
        check(r.returncode != 0 and "model-00001-of-00002.safetensors: FAILED" in r.stdout,
              f"sha256sum -c sees the damage too ({r.stdout.strip()})")
        r = run(cmd)
        err = r.stderr.strip()
        check(r.returncode == 2 and "nothing to do" not in r.stdout and err.count("\n") == 0
              and "model-00001-of-00002.safetensors differs" in err and "--overwrite" in err,
              f"the same command again refuses, naming the file ({err})")
        os.remove(os.path.join(out, "notes.txt"))
        r = run(cmd + ["--overwrite"])
        check(r.returncode == 0, f"--overwrite redoes it ({r.stderr.strip()[-300:]})")
        r = run([QBIN, "verify", out])
        check(r.returncode == 0, f"verify after --overwrite: intact ({r.stdout.strip()} {r.stderr.strip()})")

        r = run([QBIN, "verify", MODEL])
        check(r.returncode == 2 and "manifest.json" in r.stderr, f"verify of a non-qshard dir says why ({r.stderr.strip()})")
    finally:
        shutil.rmtree(t, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
