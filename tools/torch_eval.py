#!/usr/bin/env python3
"""Perplexity / KL evaluation in PyTorch, under the same protocol as `qshard eval`.

Protocol
  * tokens = [BOS] + sentencepiece.encode(whole text file as one string)
    (file read as UTF-8, nothing stripped; tokenizer.model in the model dir; BOS = sp.bos_id());
    a model directory with tokenizer.json and no tokenizer.model is tokenized with the
    `tokenizers` package instead: encode(whole text), BOS (or whatever else) only as its
    post_processor adds it, like `qshard tokenize`;
    --tokens FILE (int32 little-endian, e.g. from `qshard tokenize`) is the token stream as-is
  * non-overlapping windows of --seqlen tokens; the remainder is dropped;
    --max-windows N keeps the first N windows
  * each window is an independent sequence at positions 0..S-1; the logits at t
    predict token t+1 for t = 0..S-2 (S-1 predicted tokens per window)
  * NLL = -log_softmax(logits fp32)[next] accumulated in float64; ppl = exp(mean NLL)
  * with --reference DIR (same tokenizer / vocab): per predicted token
    KL(ref || model) = sum_v p_ref * (logp_ref - logp_model), log_softmax in fp32,
    the sum in float64 with p_ref = exp(logp_ref) (no clamping); reported mean, median,
    p99 (numpy percentile, linear interpolation: value at rank q*(n-1)), max, and
    top1_agree = fraction of predicted positions where argmax(ref) == argmax(model)
    (torch.argmax: the first maximum wins ties)

Usage
  .venv/bin/python tools/torch_eval.py --model DIR (--text FILE | --tokens FILE) [--reference DIR]
      [--seqlen 256] [--max-windows N] [--batch 8] [--threads T] [--json]
--json prints one JSON object as the last stdout line: ppl, tokens, windows, kld_mean,
kld_median, kld_p99, kld_max, top1_agree (kld/top1 null without --reference), plus
seqlen and seconds. Elapsed seconds also go to stderr.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch_llama  # noqa: E402


def tokenize_file(model_dir, text_path):
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    sp_path = os.path.join(model_dir, "tokenizer.model")
    json_path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(sp_path) and os.path.isfile(json_path):
        from tokenizers import Tokenizer
        return Tokenizer.from_file(json_path).encode(text).ids
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    return [sp.bos_id()] + sp.encode(text)


def read_tokens(path):
    """An int32 little-endian token file, as `qshard tokenize` writes it."""
    data = np.fromfile(path, dtype="<i4")
    if os.path.getsize(path) % 4 or data.size == 0:
        sys.exit(f"{path}: not a non-empty int32 little-endian token file")
    return data.astype(np.int64).tolist()


def make_windows(tokens, seqlen, max_windows=None):
    """LongTensor [W, seqlen] of non-overlapping windows (remainder dropped)."""
    n = len(tokens) // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    return torch.tensor(tokens[:n * seqlen], dtype=torch.long).view(n, seqlen)


def evaluate(model, windows, batch=8, reference=None):
    """Returns dict with ppl, tokens, windows and (with reference) the KL statistics."""
    W, S = windows.shape
    nll_sum = 0.0
    n_pred = 0
    klds = []
    agree = 0
    for i in range(0, W, batch):
        x = windows[i:i + batch]
        lp = torch.log_softmax(model(x)[:, :-1, :].float(), dim=-1)   # [b, S-1, V] fp32
        tgt = x[:, 1:]
        nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).double()
        nll_sum += float(nll.sum())
        n_pred += nll.numel()
        if reference is not None:
            rlp = lp if reference is model else \
                torch.log_softmax(reference(x)[:, :-1, :].float(), dim=-1)
            if rlp.shape[-1] != lp.shape[-1]:
                raise SystemExit("reference vocab size differs from model's")
            rlp64 = rlp.double()
            kl = (rlp64.exp() * (rlp64 - lp.double())).sum(-1)
            klds.append(kl.reshape(-1).numpy())
            agree += int((rlp.argmax(-1) == lp.argmax(-1)).sum())
    res = {"ppl": math.exp(nll_sum / n_pred) if n_pred else float("nan"),
           "tokens": n_pred, "windows": W,
           "kld_mean": None, "kld_median": None, "kld_p99": None, "kld_max": None,
           "top1_agree": None}
    if reference is not None and n_pred:
        k = np.concatenate(klds)
        res.update(kld_mean=float(k.mean()), kld_median=float(np.percentile(k, 50)),
                   kld_p99=float(np.percentile(k, 99)), kld_max=float(k.max()),
                   top1_agree=agree / n_pred)
    return res


def run(model_dir, text, seqlen=256, max_windows=None, batch=8, reference_dir=None,
        tokens_path=None):
    t0 = time.perf_counter()
    model = torch_llama.load_model(model_dir)
    ref = None
    if reference_dir is not None:
        same = os.path.realpath(reference_dir) == os.path.realpath(model_dir)
        ref = model if same else torch_llama.load_model(reference_dir)
    tokens = read_tokens(tokens_path) if tokens_path else tokenize_file(model_dir, text)
    windows = make_windows(tokens, seqlen, max_windows)
    res = evaluate(model, windows, batch=batch, reference=ref)
    res["seqlen"] = seqlen
    res["seconds"] = time.perf_counter() - t0
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="text file, tokenized as one string")
    src.add_argument("--tokens", help="int32 little-endian token file, used as the whole stream")
    ap.add_argument("--reference")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--max-windows", type=int)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seqlen < 2:
        sys.exit("--seqlen must be >= 2")
    res = run(args.model, args.text, args.seqlen, args.max_windows, args.batch, args.reference,
              args.tokens)
    print(f"windows {res['windows']} x {args.seqlen}  predicted tokens {res['tokens']}")
    print(f"ppl {res['ppl']:.6f}")
    if res["kld_mean"] is not None:
        print(f"kld mean {res['kld_mean']:.6g} median {res['kld_median']:.6g} "
              f"p99 {res['kld_p99']:.6g} max {res['kld_max']:.6g} top1 {res['top1_agree']:.6f}")
    print(f"elapsed {res['seconds']:.2f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
