#!/usr/bin/env python3
"""The reference GPTQ (IST-DASLab/gptq, fetched, not part of this repository) run on a
whole Hugging Face Llama directory, the way its llama.py does it, writing a fake-quant
model directory that `qshard eval` evaluates with the same windows as ours.

It imports llama.py's own llama_sequential (true-sequential groups, the catcher of
layer 0's inputs, outputs of each quantized layer feeding the next) and gptq.py's
fasterquant; only the data loader and the saving are ours: calibration windows are cut
from an int32 token file exactly as `qshard quantize --calib FILE.tokens` cuts them
(consecutive, non-overlapping, from the start).

    git -C <mirror of IST-DASLab/gptq> show HEAD:llama.py > /tmp/ist-gptq/llama.py (and
      gptq.py, quant.py, modelutils.py, datautils.py)
    .venv/bin/python tools/ist_gptq_llama.py --gptq-src /tmp/ist-gptq --model DIR \
        --calib calib.tokens --n-calib 128 --seqlen 256 --wbits 4 --groupsize 64 --asym --out OUT
"""
import argparse
import json
import os
import shutil
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch


def calibration_windows(path, n, seqlen):
    ids = np.fromfile(path, dtype="<i4")
    if ids.size < n * seqlen:
        sys.exit(f"{path}: {ids.size} tokens, fewer than --n-calib {n} x --seqlen {seqlen}")
    return [(torch.from_numpy(ids[i * seqlen:(i + 1) * seqlen].astype(np.int64))[None, :],) for i in range(n)]


def save_fakequant(model, src, out):
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        if os.path.exists(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gptq-src", required=True, help="folder with the reference llama.py, gptq.py, quant.py, modelutils.py")
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True, help="int32 little-endian token file")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--wbits", type=int, default=4)
    ap.add_argument("--groupsize", type=int, default=-1)
    ap.add_argument("--asym", action="store_true")
    ap.add_argument("--act-order", action="store_true")
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    sys.path.insert(0, a.gptq_src)
    torch.cuda.synchronize = lambda *args, **kw: None  # the reference times itself with CUDA syncs
    torch.cuda.empty_cache = lambda *args, **kw: None
    import llama  # noqa: E402  (the reference, loaded from outside the repo)
    torch.set_num_threads(a.threads)
    llama.args = SimpleNamespace(nsamples=a.n_calib, wbits=a.wbits, groupsize=a.groupsize, sym=not a.asym,
                                 act_order=a.act_order, static_groups=False, percdamp=a.percdamp,
                                 true_sequential=True)
    model = llama.get_llama(a.model)
    model.seqlen = a.seqlen
    model.config._attn_implementation = "eager"
    data = calibration_windows(a.calib, a.n_calib, a.seqlen)
    t0 = time.perf_counter()
    llama.llama_sequential(model, data, "cpu")
    seconds = time.perf_counter() - t0
    save_fakequant(model, a.model, a.out)
    print(json.dumps({"quantize_seconds": seconds, "out": a.out}))


if __name__ == "__main__":
    main()
