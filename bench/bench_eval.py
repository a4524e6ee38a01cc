#!/usr/bin/env python3
"""Evaluation throughput: `qshard eval` vs the PyTorch forward (tools/torch_eval.py).

Both evaluate the same windows of the same text (tokens = [BOS] + sp.encode(text),
non-overlapping windows of --seqlen, first --max-windows). Timed:
  qshard wall        wall time of the whole `qshard eval ... --json` process
  qshard self        the "seconds" its JSON reports, when present
  torch total        load weights + tokenize + evaluate (same work as the qshard process)
  torch eval         the batched forward + NLL only (torch.set_num_threads(--threads))
tokens = tokens forwarded (windows x seqlen). Best of --repeat runs each.

Usage: .venv/bin/python bench/bench_eval.py [--qshard build/qshard] [--model DIR]
           [--text FILE] [--seqlen 256] [--max-windows 64] [--batch 8] [--threads 2]
           [--repeat 1] [--qshard-arg=--some-flag ...] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qshard", default=os.environ.get("QSHARD_BIN",
                                                       os.path.join(ROOT, "build", "qshard")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--text", help="default: MODEL/text/eval.txt")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--max-windows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--qshard-arg", action="append", default=[],
                    help="extra argument for qshard eval (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    text = args.text or os.path.join(args.model, "text", "eval.txt")

    import torch
    import torch_eval
    import torch_llama
    torch.set_num_threads(args.threads)

    rows = []      # (name, tokens, seconds)
    info = {}

    # --- PyTorch
    best_total = best_eval = None
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        model = torch_llama.load_model(args.model)
        windows = torch_eval.make_windows(torch_eval.tokenize_file(args.model, text),
                                          args.seqlen, args.max_windows)
        t1 = time.perf_counter()
        res = torch_eval.evaluate(model, windows, batch=args.batch)
        t2 = time.perf_counter()
        best_total = min(best_total or 1e30, t2 - t0)
        best_eval = min(best_eval or 1e30, t2 - t1)
    ntok = int(windows.numel())
    info["torch_ppl"] = res["ppl"]
    info["windows"] = res["windows"]
    torch_total = ("torch total", ntok, best_total)
    torch_eval_row = ("torch eval", ntok, best_eval)

    # --- qshard
    q_wall = q_self = None
    if os.path.exists(args.qshard):
        cmd = [args.qshard, "eval", "--model", args.model, "--text", text,
               "--seqlen", str(args.seqlen), "--max-windows", str(args.max_windows),
               "--json"] + args.qshard_arg
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            dt = time.perf_counter() - t0
            if p.returncode != 0:
                print(f"# qshard eval failed (rc {p.returncode}): {' '.join(cmd)}\n{p.stderr[-1500:]}",
                      file=sys.stderr)
                return 1
            lines = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
            q = json.loads(lines[-1])
            q_wall = min(q_wall or 1e30, dt)
            if isinstance(q.get("seconds"), (int, float)):
                q_self = min(q_self or 1e30, float(q["seconds"]))
        info["qshard_ppl"] = q.get("ppl")
        if q.get("windows") != info["windows"]:
            print(f"# WARNING: windows differ: qshard {q.get('windows')} torch {info['windows']}",
                  file=sys.stderr)
        rows.append(("qshard wall", ntok, q_wall))
        if q_self is not None:
            rows.append(("qshard self", ntok, q_self))
    else:
        print(f"# qshard binary not found: {args.qshard} (torch rows only)", file=sys.stderr)
    rows += [torch_total, torch_eval_row]

    tps = {name: tok / sec for name, tok, sec in rows}
    ratios = {}
    if q_wall is not None:
        ratios["qshard wall / torch total"] = tps["qshard wall"] / tps["torch total"]
    if q_self is not None:
        ratios["qshard self / torch eval"] = tps["qshard self"] / tps["torch eval"]

    print(f"# model {args.model}  seqlen {args.seqlen}  windows {info['windows']}  "
          f"torch threads {args.threads} batch {args.batch}  best of {args.repeat}")
    print(f"# ppl torch {info['torch_ppl']:.6f}" +
          (f"  qshard {info['qshard_ppl']:.6f}" if info.get("qshard_ppl") is not None else ""))
    print(f"# {'name':14s} {'tokens':>8s} {'seconds':>9s} {'tokens/s':>10s}")
    for name, tok, sec in rows:
        print(f"{name:16s} {tok:8d} {sec:9.3f} {tok / sec:10.1f}")
    for k, v in ratios.items():
        print(f"# ratio tokens/s {k}: {v:.3f}")
    if args.json:
        print(json.dumps({"rows": [{"name": n, "tokens": t, "seconds": s, "tokens_per_s": t / s}
                                   for n, t, s in rows], "ratios": ratios, **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
