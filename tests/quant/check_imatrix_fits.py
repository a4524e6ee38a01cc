#!/usr/bin/env python3
"""qshard's imatrix-path fits against llama.cpp's (what `llama-quantize --imatrix` computes):
for Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS, a weight with a given importance
(seeded normal rows, some heavy-tailed, a zero super-block and a zero sub-block, some zero
importances) is quantized by llama.cpp's ggml_quantize_chunk (ggml_quantize_chunk.c, built
here against the cached llama.cpp build) and by qshard's kquant_rtn (ggml_fit_probe); the
gguf package dequantizes llama.cpp's blocks, which must equal qshard's dequantized weight
bit for bit (the same scales, codes and FP16 rounding; -0 included).
(32-block types are left out: their imatrix fit runs inside GPTQ, block by block on the
updated weights, so it has no stand-alone counterpart.)
Args: the ggml_fit_probe binary. Env: QSHARD_VOCAB_DIR (its cache holds the llama.cpp
build and source). Exit 0 pass, 1 fail (a missing llama.cpp build fails, naming the script).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import check, verdict  # noqa: E402

CACHE = os.path.dirname(os.environ.get("QSHARD_VOCAB_DIR", os.path.expanduser("~/.cache/qshard/llama-vocab-0.3.36")))
BUILD = os.path.join(CACHE, "llama-cpp-build-0.3.36")
SRC = os.path.join(CACHE, "llama-cpp-src", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
TYPES = [("q2_k", T.Q2_K), ("q3_k", T.Q3_K), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K),
         ("iq4_nl", T.IQ4_NL), ("iq4_xs", T.IQ4_XS)]
ROWS, COLS = 64, 768


def main():
    probe = sys.argv[1]
    lib = os.path.join(BUILD, "ggml", "src", "libggml-base.a")
    if not os.path.exists(lib) or not os.path.exists(os.path.join(SRC, "ggml", "include", "ggml.h")):
        print(f"FAIL: {lib} (or its source) is missing: run launch/build_llama_cpp.sh (launch/setup.sh calls it)")
        return 1
    tmp = tempfile.TemporaryDirectory(prefix="qshard-imatrix-")
    t = tmp.name
    exe = os.path.join(t, "ggml_quantize_chunk")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.check_call([os.environ.get("CC", "cc"), "-O1", "-c", "-I", os.path.join(SRC, "ggml", "include"),
                           os.path.join(here, "ggml_quantize_chunk.c"), "-o", exe + ".o"])
    subprocess.check_call([os.environ.get("CXX", "c++"), exe + ".o", "-o", exe, lib, "-lm", "-lpthread"])
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        w = (rng.standard_normal((ROWS, COLS)) * 0.02).astype(np.float32)
        w[::7] *= rng.standard_t(3, (1, COLS)).astype(np.float32)
        w[5, :256] = 0
        w[6, 32:64] = 0
        im = (rng.exponential(1.0, COLS) * rng.exponential(1.0, COLS)).astype(np.float32)
        im[:16] = 0
        wf, imf = os.path.join(t, "w.bin"), os.path.join(t, "im.bin")
        w.tofile(wf)
        im.tofile(imf)
        subprocess.check_call([exe, wf, imf, str(ROWS), str(COLS), t])
        subprocess.check_call([probe, wf, imf, str(ROWS), str(COLS), t])
        for name, ty in TYPES:
            blocks = np.fromfile(os.path.join(t, f"lq-{name}.bin"), dtype=np.uint8).reshape(ROWS, -1)
            theirs = quants.dequantize(blocks, ty).reshape(ROWS, COLS).astype(np.float32)
            ours = np.fromfile(os.path.join(t, f"qs-{name}.bin"), dtype=np.float32).reshape(ROWS, COLS)
            n = int((theirs.view(np.uint32) != ours.view(np.uint32)).sum())
            check(n == 0, f"seed {seed} {name}: imatrix fit equals llama.cpp's bit for bit" + (f" ({n} values differ)" if n else ""))
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
