#!/usr/bin/env python3
"""AutoRound (Intel's auto-round, a peer quantizer: signed-gradient descent on each
block's rounding offsets and clipping ranges against the block's unquantized outputs) on
a Hugging Face Llama directory, calibrated on an int32 token file cut exactly as
`qshard quantize --calib FILE.tokens` cuts it (consecutive, non-overlapping windows from
the start, in order). Saved in auto-round's "fake" format: the quantize-dequantized weights
as a dense checkpoint, which `qshard eval` reads like qshard's fake-quant export. Runs in
the engines venv (launch/engines_venv.sh, auto-round 0.15.1, torch 2.10) on the CPU.

    $(launch/engines_venv.sh --python) tools/autoround_run.py --model DIR \
        --calib calib.tokens --n-calib 128 --seqlen 256 --group-size 128 --iters 200 --out OUT
Scheme: int4 asymmetric, groups of --group-size along the input, lm_head left alone;
auto-round's defaults otherwise (lr 1/iters, minmax lr, batch 8, its CPU autocast), except
--iters; torch.compile off (on this CPU it spent minutes compiling each block).
"""
import argparse
import os
import shutil

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True, help="int32 little-endian token file")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--iters", type=int, default=200, help="auto-round's tuning steps per block (its default 200)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--fp32", action="store_true", help="tune in fp32 (amp=False) instead of its bf16 autocast")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = np.fromfile(a.calib, dtype="<i4")
    if ids.size < a.n_calib * a.seqlen:
        raise SystemExit(f"{a.calib}: {ids.size} tokens, fewer than {a.n_calib} x {a.seqlen}")
    windows = torch.from_numpy(ids[:a.n_calib * a.seqlen].reshape(a.n_calib, a.seqlen).astype(np.int64))
    data = [w[None, :] for w in windows]  # one window per item: auto-round batches them itself
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(a.model)
    ar = AutoRound(model, tok, bits=a.bits, group_size=a.group_size, sym=False, iters=a.iters,
                   nsamples=a.n_calib, seqlen=a.seqlen, batch_size=min(a.batch_size, a.n_calib),
                   dataset=data, device_map="cpu", enable_torch_compile=False, amp=not a.fp32)
    ar.quantize_and_save(a.out, format="fake")
    # auto-round writes into a subfolder named after the model and scheme: move it up.
    sub = [d for d in os.listdir(a.out) if os.path.isfile(os.path.join(a.out, d, "config.json"))]
    if not os.path.isfile(os.path.join(a.out, "config.json")) and len(sub) == 1:
        for name in os.listdir(os.path.join(a.out, sub[0])):
            shutil.move(os.path.join(a.out, sub[0], name), os.path.join(a.out, name))
        os.rmdir(os.path.join(a.out, sub[0]))
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        if os.path.exists(os.path.join(a.model, name)):
            shutil.copy(os.path.join(a.model, name), a.out)


if __name__ == "__main__":
    main()
