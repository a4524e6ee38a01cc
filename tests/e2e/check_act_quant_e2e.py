#!/usr/bin/env python3
"""Activation quantization and the W8A8 / W4A8 / AWQ exports, end to end on the tiny model.

Checks:
- `qshard eval --act-format int8|mxint8` on the original model: small but nonzero KLD
  against itself (the reference runs unquantized);
- W8A8 (GPTQ int8 per channel + int8 activations) written as compressed-tensors
  int-quantized: `qshard eval --model OUT` picks the activation scheme up from the
  config (same result as an explicit --act-format int8, worse than --act-format none), and
  the fake-quant export of the same run (which records the scheme in config.json)
  evaluates the same; W4A8 (int4 sym) and an HDF5 export with mxint8 activations load
  and evaluate as they record;
- AWQ (--export awq): an independent numpy unpacker written from AutoAWQ's
  awq/utils/packing_utils.py (unpack_awq, AWQ_REVERSE_ORDER) dequantizes our file to the
  weights of the fake-quant export of the same RTN run (BF16 rounding apart);
- refusals: exit code 2 and one line.
Env: QSHARD_BIN, QSHARD_TEST_MODEL. Exit 0 pass, 1 fail.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, calib_args, check, eval_args, run, verdict  # noqa: E402
CALIB = calib_args(32, 256)
EVAL = eval_args(256, 32)


def quantize(out, *args):
    run([QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + list(args))


def evaluate(model, *args):
    r = json.loads(run([QBIN, "eval", "--model", model, "--reference", MODEL] + EVAL + list(args))
                   .strip().splitlines()[-1])
    print(f"  eval {os.path.basename(model)} {' '.join(args)}: kld_mean {r['kld_mean']:.6f} ppl {r['ppl']:.4f}")
    return r


def tensors(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(d, f), framework="pt") as st:
                for k in st.keys():
                    out[k] = st.get_tensor(k)
    return out


AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def awq_dequant(qweight, qzeros, scales, group_size):
    """AutoAWQ dequantize_gemm in numpy/float32: [in, out] weights."""
    def unpack(words):
        w = words.astype(np.int64) & 0xFFFFFFFF
        v = ((w[:, :, None] >> np.arange(0, 32, 4)[None, None, :]) & 0xF).reshape(w.shape[0], -1)
        return v[:, np.arange(v.shape[1]).reshape(-1, 8)[:, AWQ_REVERSE_ORDER].reshape(-1)]
    iw, iz = unpack(qweight), unpack(qzeros)
    g = np.arange(iw.shape[0]) // group_size
    return scales[g].astype(np.float32) * (iw - iz[g]).astype(np.float32)


def main():
    tmp = tempfile.TemporaryDirectory(prefix="qshard-actq-")
    t = tmp.name
    try:
        base = evaluate(MODEL)
        check(base["kld_mean"] < 1e-9, f"the original against itself has KLD 0 ({base['kld_mean']:.2e})")
        for a in ("int8", "mxint8"):
            r = evaluate(MODEL, "--act-format", a)
            check(1e-6 < r["kld_mean"] < 0.01, f"--act-format {a}: small nonzero KLD ({r['kld_mean']:.6f})")

        w8a8 = ["--method", "gptq", "--format", "int8", "--group-size", "-1", "--sym", "--act-format", "int8"]
        quantize(os.path.join(t, "w8a8-ct"), *w8a8, "--export", "compressed-tensors")
        quantize(os.path.join(t, "w8a8-fq"), *w8a8, "--export", "fakequant")
        auto = evaluate(os.path.join(t, "w8a8-ct"))
        explicit = evaluate(os.path.join(t, "w8a8-ct"), "--act-format", "int8")
        weights_only = evaluate(os.path.join(t, "w8a8-ct"), "--act-format", "none")
        fq = evaluate(os.path.join(t, "w8a8-fq"))
        check(auto["kld_mean"] == explicit["kld_mean"], "W8A8 compressed-tensors: eval picks int8 activations up")
        check(auto["kld_mean"] > 2 * weights_only["kld_mean"],
              f"W8A8: int8 activations cost more than int8 weights ({auto['kld_mean']:.6f} vs "
              f"{weights_only['kld_mean']:.6f})")
        check(abs(fq["kld_mean"] - auto["kld_mean"]) <= 0.1 * auto["kld_mean"],
              f"W8A8 fake-quant export evaluates like the compressed-tensors one "
              f"({fq['kld_mean']:.6f} vs {auto['kld_mean']:.6f})")

        quantize(os.path.join(t, "w4a8-ct"), "--method", "rtn", "--format", "int4", "--group-size", "128",
                 "--sym", "--act-format", "int8", "--export", "compressed-tensors")
        w4a8 = evaluate(os.path.join(t, "w4a8-ct"))
        check(w4a8["kld_mean"] > auto["kld_mean"], "W4A8 is worse than W8A8")
        quantize(os.path.join(t, "mx-h5"), "--method", "rtn", "--format", "int8", "--group-size", "-1",
                 "--act-format", "mxint8", "--export", "hdf5")
        check(evaluate(os.path.join(t, "mx-h5"))["kld_mean"] ==
              evaluate(os.path.join(t, "mx-h5"), "--act-format", "mxint8")["kld_mean"],
              "HDF5 export: eval picks mxint8 activations up")

        # AWQ vs the fake-quant export of the same (deterministic) RTN run.
        awq_args = ["--method", "rtn", "--format", "int4", "--asym", "--group-size", "64"]
        quantize(os.path.join(t, "awq"), *awq_args, "--export", "awq")
        quantize(os.path.join(t, "awq-fq"), *awq_args, "--export", "fakequant")
        qc = json.load(open(os.path.join(t, "awq", "config.json")))["quantization_config"]
        check(qc["quant_method"] == "awq" and qc["version"] == "gemm" and qc["group_size"] == 64,
              f"AWQ quantization_config {qc}")
        a, f = tensors(os.path.join(t, "awq")), tensors(os.path.join(t, "awq-fq"))
        mods = [k[: -len(".qweight")] for k in a if k.endswith(".qweight")]
        check(len(mods) == 28, f"AWQ: 28 packed Linears ({len(mods)})")
        worst = 0.0
        for m in mods:
            w = awq_dequant(a[m + ".qweight"].numpy(), a[m + ".qzeros"].numpy(),
                            a[m + ".scales"].float().numpy(), qc["group_size"]).T
            ref = f[m + ".weight"].float().numpy()
            ok = np.allclose(w, ref, rtol=2 ** -7, atol=0)
            worst = max(worst, float(np.abs(w - ref).max()))
            if not ok:
                check(False, f"AWQ {m}: numpy dequant differs from fake-quant by {np.abs(w - ref).max()}")
        check(all(k in a and torch.equal(a[k], f[k]) for k in f if not k.endswith("proj.weight")),
              "AWQ: dense tensors as in the fake-quant export")
        print(f"  AWQ numpy dequant vs fake-quant: max |diff| {worst:.3g} over {len(mods)} modules")
        ea, ef = evaluate(os.path.join(t, "awq")), evaluate(os.path.join(t, "awq-fq"))
        check(abs(ea["kld_mean"] - ef["kld_mean"]) <= 0.05 * ef["kld_mean"],
              f"AWQ evaluates like its fake-quant export ({ea['kld_mean']:.5f} vs {ef['kld_mean']:.5f})")
    except RuntimeError as e:
        check(False, str(e))

    for args, pattern in ((["--format", "int4", "--export", "awq"], "--asym"),
                          (["--format", "int4", "--asym", "--export", "gptq", "--act-format", "int8"], "--act-format"),
                          (["--format", "int8", "--group-size", "-1", "--export", "compressed-tensors",
                            "--act-format", "mxint8"], "mxint8"),
                          (["--format", "int8", "--export", "compressed-tensors", "--act-format", "int8"], "W8A8"),
                          (["--act-format", "fp8"], "--act-format")):
        out = os.path.join(t, "refused")
        p = subprocess.run([QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + args,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = p.stderr.strip().splitlines()
        check(p.returncode == 2 and len(lines) == 1 and pattern in lines[0],
              f"refused {' '.join(args)}: rc {p.returncode}, {lines}")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
