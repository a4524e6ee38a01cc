#!/usr/bin/env python3
"""Checks the CPU backend's activation fake-quantization against torch / numpy.

argv[1] is the act_quant_sample tool; it writes x and the backend's outputs for --act-format
int8 and mxint8. References, written here from the engines' descriptions, not from our C++:
- int8: vLLM's per-token dynamic INT8 (tests/kernels/quant_utils.py ref_dynamic_per_token_quant
  and csrc .../int8_quant_kernels.cu): scale = amax/127, codes round(x * (127/amax)) in
  float32 (torch.round: half to even), saturated to [-128, 127] (NaN -> 0 as PTX
  cvt.rni.sat does), value = code * scale.
- mxint8: OCP MX (formats.md F.3/F.4, microxcaling _quantize_mx with emax_elem 0 and
  round-half-even): per block of 32 along the row, E = floor(log2(amax)) clamped to
  [-127, 127], k = clip(rint(x / 2^E * 64), -127, 127), value k * 2^(E-6).
Every element must match bit for bit.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file


def ref_int8(x):
    xt = torch.from_numpy(x)
    amax = xt.abs().amax(dim=-1, keepdim=True)
    scale = amax / torch.tensor(127.0, dtype=torch.float32)
    inv = torch.tensor(127.0, dtype=torch.float32) / amax
    q = torch.round(xt * inv)
    q = torch.nan_to_num(q, nan=0.0).clamp(-128, 127)
    y = q * scale
    y[(amax == 0).expand_as(y)] = 0.0
    return y.numpy()


def ref_mxint8(x, block=32):
    y = np.empty_like(x)
    for b in range(0, x.shape[1], block):
        xb = x[:, b:b + block].astype(np.float32)
        amax = np.abs(xb).max(axis=1, keepdims=True)
        _, ex = np.frexp(np.where(amax > 0, amax, np.float32(1.0)))
        e = np.where(amax > 0, ex - 1, -126)
        e = np.clip(e, -127, 127)
        k = np.clip(np.rint(np.ldexp(xb, 6 - e)), -127, 127).astype(np.float32)
        y[:, b:b + block] = np.ldexp(k, e - 6).astype(np.float32)
    return y


def main():
    with tempfile.TemporaryDirectory(prefix="qshard-actq-") as d:
        subprocess.run([sys.argv[1], d], check=True)
        t = load_file(os.path.join(d, "act_quant.safetensors"))
    x = t["x"]
    failures = 0
    for name, ref in (("int8", ref_int8), ("mxint8", ref_mxint8)):
        got, want = t[name], ref(x)
        same = (got.view(np.uint32) == want.view(np.uint32)) | ((got == 0) & (want == 0))
        if not same.all():
            r, c = np.argwhere(~same)[0]
            print(f"FAIL: {name}: {int((~same).sum())} elements differ, first at row {r} col {c}: "
                  f"{got[r, c]!r} vs reference {want[r, c]!r} (x = {x[r, c]!r})")
            failures += 1
        else:
            err = np.abs(got - x).max(axis=1) / np.maximum(np.abs(x).max(axis=1), 1e-30)
            print(f"ok:   {name}: {got.size} elements bit-identical; max row-relative error {err.max():.4g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
