#!/usr/bin/env python3
"""GPU end to end on the tiny model: `qshard quantize --device cuda` against `--device cpu`
(same calibration, hdf5 export so the codes can be read), then `qshard eval` of both
against the original.

Checks per case: ≥ 99% of the GPTQ/RTN codes identical to the CPU run's (rounding ties
after differently-ordered GEMMs may flip a few), and the KLD vs the original within 2%
(relative, plus 1e-4 absolute for near-zero KLDs) of the CPU run's. The strict code check
runs with QSHARD_CUDA_MATH=fp32 (fp32 forward); the default bf16 forward is checked on
KLD only, since bf16 activations change the Hessians themselves.
Exits 77 (skipped) when this build has no CUDA or the machine no GPU.
Env: QSHARD_BIN, QSHARD_TEST_MODEL. Exit 0 pass, 1 fail, 77 skip.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, calib_args, check, eval_args, run, verdict  # noqa: E402
CALIB = calib_args(32, 256)
EVAL = eval_args(256, 32)
MIN_IDENTICAL = 0.99
KLD_REL = 0.02
KLD_ABS = 1e-4


def has_gpu():
    out = run([QBIN, "info"])
    gpus = [l for l in out.splitlines() if l.startswith("gpus:")]
    return bool(gpus) and "no usable device" not in gpus[0] and " 0 device(s)" not in gpus[0]


def codes_of(out_dir):
    import h5py
    import numpy as np
    codes = {}
    with h5py.File(os.path.join(out_dir, "model.h5"), "r") as f:
        for name, obj in f.items():
            if name != "dense" and "codes" in obj:
                codes[name] = np.asarray(obj["codes"][()])
    return codes


def evaluate(model):
    return json.loads(run([QBIN, "eval", "--model", model, "--reference", MODEL] + EVAL).strip().splitlines()[-1])


def main():
    if not has_gpu():
        print("skip: no CUDA build or no GPU (qshard info shows no usable device)")
        return 77
    import numpy as np
    tmp = tempfile.TemporaryDirectory(prefix="qshard-cuda-e2e-")
    cases = {
        "gptq-int4-g128": ["--method", "gptq", "--format", "int4", "--group-size", "128"],
        "gptq-int4-act-asym": ["--method", "gptq", "--format", "int4", "--group-size", "128", "--asym",
                               "--act-order"],
        "rtn-int4-g128": ["--method", "rtn", "--format", "int4", "--group-size", "128"],
        "gptq-nvfp4": ["--method", "gptq", "--format", "nvfp4"],
    }
    for name, args in cases.items():
        outs = {}
        for dev, math in (("cpu", None), ("cuda", "fp32"), ("cuda", "bf16")):
            out = os.path.join(tmp.name, f"{name}-{dev}-{math}")
            run([QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet", "--device", dev,
                 "--export", "hdf5"] + CALIB + args, env={"QSHARD_CUDA_MATH": math} if math else None)
            outs[(dev, math)] = out
        ref_codes = codes_of(outs[("cpu", None)])
        gpu_codes = codes_of(outs[("cuda", "fp32")])
        check(ref_codes.keys() == gpu_codes.keys(), f"{name}: same quantized modules")
        same = sum(int((ref_codes[k] == gpu_codes[k]).sum()) for k in ref_codes)
        total = sum(ref_codes[k].size for k in ref_codes)
        share = same / max(total, 1)
        check(share >= MIN_IDENTICAL, f"{name}: {100 * share:.3f}% identical codes cuda(fp32) vs cpu "
                                      f"(need {100 * MIN_IDENTICAL:.0f}%)")
        k_cpu = evaluate(outs[("cpu", None)])["kld_mean"]
        for key in (("cuda", "fp32"), ("cuda", "bf16")):
            k = evaluate(outs[key])["kld_mean"]
            check(abs(k - k_cpu) <= KLD_REL * k_cpu + KLD_ABS,
                  f"{name}: KLD {k:.6f} with cuda/{key[1]} vs {k_cpu:.6f} on cpu (within {100 * KLD_REL:.0f}%)")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
