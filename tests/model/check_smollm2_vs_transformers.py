#!/usr/bin/env python3
"""qshard's forward on a real pretrained model against Hugging Face transformers.

SmolLM2-135M-Instruct (QSHARD_SMOLLM2_DIR, made by launch/fetch_testdata.sh): the tiny
model's eval text is tokenized with the model's tokenizer.json (the `tokenizers` package,
add_special_tokens as the tokenizer defines), written as an int32 token file, and the first
WINDOWS windows of SEQLEN tokens are run through
  * causal_lm_logits (argv[1], tests/model/write_logits.cpp: qshard's CausalLM, CPU), and
  * transformers' LlamaForCausalLM (fp32, eager attention) on the same windows.
Checks: max |logit diff| <= ATOL (fp32 against fp32 through 30 layers: rounding only; a
wrong RoPE layout, norm or mask is O(1)); top-1 identical at every position whose
transformers top-2 margin exceeds twice the max diff (closer ones are ties that rounding
may break either way, reported); ppl of both within PPL_RTOL, and in a sane range for this
model on this text (about 35; the q/k rows left in llama.cpp's permuted order give ~480).

usage: check_smollm2_vs_transformers.py CAUSAL_LM_LOGITS
Env: QSHARD_SMOLLM2_DIR, QSHARD_TEST_MODEL (for text/eval.txt).
Exit 0 pass, 1 fail (also when the SmolLM2 directory is missing), 77 skip (torch /
transformers / tokenizers / safetensors not importable).
"""
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from smollm2_testbed import smollm2_dir, token_file  # noqa: E402

SEQLEN, WINDOWS = 128, 4
ATOL = 5e-4   # measured 1.0e-4 (logit rms 8.4) on 4 x 128 tokens
PPL_RTOL = 1e-4
PPL_RANGE = (20.0, 60.0)


def ppl(logits, tokens):
    """exp(mean NLL of token t+1 from logits at t), log_softmax in float64."""
    import numpy as np
    lg = logits[:, :-1, :].astype(np.float64)
    lg -= lg.max(-1, keepdims=True)
    lse = np.log(np.exp(lg).sum(-1))
    nll = lse - np.take_along_axis(lg, tokens[:, 1:, None], -1)[..., 0]
    return math.exp(float(nll.mean()))


def transformers_logits(model_dir, tokens):
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                             attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.numpy()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        import numpy as np
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import tokenizers  # noqa: F401
        from safetensors.numpy import load_file
    except ImportError as e:
        print(f"SKIP: {e}")
        return 77
    model_dir = smollm2_dir()
    text = os.path.join(os.environ["QSHARD_TEST_MODEL"], "text", "eval.txt")
    with tempfile.TemporaryDirectory() as tmp:
        tok_path = os.path.join(tmp, "eval.tokens")
        n = token_file(model_dir, text, tok_path)
        t0 = time.perf_counter()
        subprocess.run([sys.argv[1], model_dir, tok_path, str(SEQLEN), str(WINDOWS), tmp],
                       check=True)
        t1 = time.perf_counter()
        got = load_file(os.path.join(tmp, "logits.safetensors"))
    tokens, q = got["tokens"], got["logits"]
    t2 = time.perf_counter()
    ref = transformers_logits(model_dir, tokens)
    t3 = time.perf_counter()
    print(f"{n} tokens; {WINDOWS} windows x {SEQLEN}; qshard {t1 - t0:.1f} s, "
          f"transformers {t3 - t2:.1f} s")

    ok = True
    if q.shape != ref.shape:
        print(f"FAIL: logits shape {q.shape} vs transformers {ref.shape}")
        return 1
    diff = np.abs(q.astype(np.float64) - ref)
    max_abs = float(diff.max())
    rms = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
    print(f"max |logit diff| {max_abs:.3g} (logit rms {rms:.3g}, relative {max_abs / rms:.3g}); "
          f"mean |diff| {float(diff.mean()):.3g}")
    if not max_abs <= ATOL:
        print(f"FAIL: max |logit diff| {max_abs:.3g} > {ATOL}")
        ok = False

    top2 = np.sort(ref, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    decided = margin > 2 * max_abs
    agree = q.argmax(-1) == ref.argmax(-1)
    wrong = int((~agree & decided).sum())
    print(f"top-1: {int(agree.sum())}/{agree.size} identical; {int((~decided).sum())} "
          f"near-ties (margin <= {2 * max_abs:.2g}); {wrong} decided positions differ")
    if wrong:
        print("FAIL: top-1 differs where transformers' top-2 margin is not a tie")
        ok = False

    p_q, p_t = ppl(q, tokens), ppl(ref, tokens)
    print(f"ppl qshard {p_q:.5f}  transformers {p_t:.5f}  (rel diff {abs(p_q - p_t) / p_t:.2g})")
    if not abs(p_q - p_t) <= PPL_RTOL * p_t:
        print(f"FAIL: ppl differs by more than {PPL_RTOL} relative")
        ok = False
    if not PPL_RANGE[0] <= p_t <= PPL_RANGE[1]:
        print(f"FAIL: ppl {p_t:.2f} outside {PPL_RANGE} (weights converted wrongly? ~480 means "
              "q/k rows still in llama.cpp's permuted order)")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
