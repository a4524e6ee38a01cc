#!/usr/bin/env python3
"""`qshard eval` on a real pretrained model against tools/torch_eval.py.

SmolLM2-135M-Instruct (QSHARD_SMOLLM2_DIR, made by launch/fetch_testdata.sh) on the tiny
model's eval text, tokenized once with the `tokenizers` package into an int32 token file:
    $QSHARD_BIN eval --model M --tokens FILE --seqlen S --max-windows N --json
    tools/torch_eval.py --model M --tokens FILE --seqlen S --max-windows N --json
Checks: equal `tokens` and `windows`; |ppl_q - ppl_t| / ppl_t < PPL_RTOL. Then
`qshard eval --text` (qshard's own tokenizer.json reader) gives the same ppl as --tokens
(the same ids, so the same numbers).
Env: QSHARD_BIN, QSHARD_SMOLLM2_DIR, QSHARD_TEST_MODEL (for text/eval.txt), optional
QSHARD_SOURCE_DIR. Exit 0 pass, 1 fail (also when the SmolLM2 directory is missing), 77 skip
(torch / numpy / tokenizers not importable).
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from smollm2_testbed import smollm2_dir  # noqa: E402

SEQLEN, WINDOWS = 128, 6
PPL_RTOL = 1e-4


def last_json(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    try:
        import numpy as np
        import torch  # noqa: F401
        from tokenizers import Tokenizer
    except ImportError as e:
        print(f"SKIP: {e}")
        return 77
    src = os.environ.get("QSHARD_SOURCE_DIR",
                         os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    model = smollm2_dir()
    text = os.path.join(os.environ["QSHARD_TEST_MODEL"], "text", "eval.txt")
    window_args = ["--seqlen", str(SEQLEN), "--max-windows", str(WINDOWS), "--json"]
    with tempfile.TemporaryDirectory() as tmp:
        tokens = os.path.join(tmp, "eval.tokens")
        with open(text, encoding="utf-8") as f:
            ids = Tokenizer.from_file(os.path.join(model, "tokenizer.json")).encode(f.read()).ids
        np.asarray(ids, dtype="<i4").tofile(tokens)
        q = last_json([os.environ["QSHARD_BIN"], "eval", "--model", model, "--tokens", tokens,
                       "--quiet"] + window_args)
        t = last_json([sys.executable, os.path.join(src, "tools", "torch_eval.py"), "--model",
                       model, "--tokens", tokens] + window_args)
    qt = last_json([os.environ["QSHARD_BIN"], "eval", "--model", model, "--text", text,
                    "--quiet"] + window_args)
    rel = abs(q["ppl"] - t["ppl"]) / t["ppl"]
    print(f"qshard eval --tokens ppl {q['ppl']:.6f}, --text {qt['ppl']:.6f}; torch_eval.py "
          f"{t['ppl']:.6f} (rel diff {rel:.2g}); {q['windows']} x {SEQLEN}")
    ok = True
    for key in ("tokens", "windows"):
        if q[key] != t[key] or q[key] != qt[key]:
            print(f"FAIL: {key}: qshard --tokens {q[key]}, --text {qt[key]}, torch {t[key]}")
            ok = False
    if not rel < PPL_RTOL:
        print(f"FAIL: ppl differs from torch_eval.py by {rel:.2g} >= {PPL_RTOL}")
        ok = False
    if qt["ppl"] != q["ppl"]:
        print("FAIL: --text and --tokens (the same ids) give different ppl")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
