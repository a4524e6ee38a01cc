#!/usr/bin/env python3
"""End to end on the tiny model: `qshard quantize` with RTN and GPTQ into every export,
then `qshard eval --model OUT --reference ORIGINAL` on what was written.

Checks: every export evaluates; GPTQ int4 g128 has a clearly lower KLD than RTN int4 g128
(< 0.8x); the gptq, compressed-tensors and hdf5 exports evaluate like the fakequant one of
the same run (they hold the same codes; only scale storage precision differs); the report
lists every linear with a positive error; no temporary files are left; bad combinations
are refused with exit code 2 and one line; 2 ranks give the same quality as 1.
Env: QSHARD_BIN, QSHARD_TEST_MODEL. Exit 0 pass, 1 fail.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, MPIRUN, calib_args, check, eval_args, run, verdict  # noqa: E402
CALIB = calib_args(32, 256)
EVAL = eval_args(256, 32)


def quantize(out, *args, prefix=()):
    run(list(prefix) + [QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + list(args))


def evaluate(model):
    return json.loads(run([QBIN, "eval", "--model", model, "--reference", MODEL] + EVAL).strip().splitlines()[-1])


def main():
    tmp = tempfile.TemporaryDirectory(prefix="qshard-e2e-")
    t = tmp.name
    results = {}
    runs = {
        "rtn-int4": ["--method", "rtn", "--format", "int4", "--group-size", "128", "--export", "fakequant"],
        "gptq-int4-gptq": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--export", "gptq"],
        "gptq-int4-fakequant": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--export", "fakequant"],
        "gptq-int4-ct": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--export", "compressed-tensors"],
        "gptq-int4-hdf5": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--export", "hdf5"],
        "gptq-int4-actorder-asym": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--asym",
                                    "--act-order", "--export", "gptq"],
        "gptq-mxfp4": ["--method", "gptq", "--format", "mxfp4", "--export", "fakequant"],
        "gptq-nvfp4": ["--method", "gptq", "--format", "nvfp4", "--export", "hdf5"],
    }
    for name, args in runs.items():
        out = os.path.join(t, name)
        try:
            quantize(out, *args)
            results[name] = evaluate(out)
        except RuntimeError as e:
            check(False, f"{name}: {e}")
            continue
        r = results[name]
        print(f"  {name:26s} ppl {r['ppl']:.4f}  kld_mean {r['kld_mean']:.5f}  p99 {r['kld_p99']:.5f}  "
              f"top1 {r['top1_agree']:.4f}")
        leftovers = [f for f in os.listdir(out) if (f.startswith(".") and f != ".qshard") or f.endswith(".tmp")]
        # A finished run keeps only its manifest (the completion marker, checkpoint.h).
        leftovers += [".qshard/" + f for f in os.listdir(os.path.join(out, ".qshard")) if f != "manifest.json"]
        check(not leftovers, f"{name}: no temporary files left ({leftovers})")
        check(os.path.exists(os.path.join(out, "config.json")), f"{name}: config.json written")
        rep = json.load(open(os.path.join(out, "quantize_report.json")))
        mods = rep["modules"]
        check(len(mods) == 4 * 7 and all(m["rel_error"] > 0 for m in mods),
              f"{name}: report lists 28 linears with positive error")

    def kld(n):
        return results[n]["kld_mean"] if n in results else float("nan")

    check(kld("gptq-int4-gptq") < 0.8 * kld("rtn-int4"),
          f"GPTQ int4 g128 KLD {kld('gptq-int4-gptq'):.5f} < 0.8 x RTN {kld('rtn-int4'):.5f}")
    for other in ("gptq-int4-gptq", "gptq-int4-ct", "gptq-int4-hdf5"):
        a, b = kld(other), kld("gptq-int4-fakequant")
        check(abs(a - b) <= 0.05 * b, f"{other} evaluates like the fakequant export ({a:.5f} vs {b:.5f})")

    # Two ranks: Hessians are summed over ranks; the quality must match one rank.
    try:
        out = os.path.join(t, "gptq-2ranks")
        quantize(out, "--format", "int4", "--export", "fakequant", prefix=MPIRUN + ["-np", "2"])
        r2 = evaluate(out)
        a, b = r2["kld_mean"], kld("gptq-int4-fakequant")
        check(abs(a - b) <= 0.05 * b, f"2 ranks quantize like 1 ({a:.5f} vs {b:.5f})")
    except RuntimeError as e:
        check(False, f"2-rank quantize: {e}")

    # Refusals: one line, exit code 2, nothing that looks finished.
    for args, pattern in ((["--format", "mxfp4", "--export", "gptq"], "--export"),
                          (["--format", "int5", "--export", "gptq"], "--format"),
                          (["--format", "int4", "--group-size", "100"], "group")):
        out = os.path.join(t, "refused")
        p = subprocess.run([QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + args,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = p.stderr.strip().splitlines()
        check(p.returncode == 2 and len(lines) == 1 and pattern in lines[0],
              f"refused {' '.join(args)}: rc {p.returncode}, {lines}")
        check(not os.path.exists(os.path.join(out, "config.json")), "refused run wrote no config.json")
    p = subprocess.run([QBIN, "quantize", "--model", MODEL, "--out", os.path.join(t, "rtn-int4"),
                        "--quiet"] + CALIB, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check(p.returncode == 2 and "already holds" in p.stderr, "refuses to overwrite a finished output")

    return verdict()


if __name__ == "__main__":
    sys.exit(main())
