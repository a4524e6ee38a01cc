#!/usr/bin/env python3
"""Quality table on the tiny model: method x format -> ppl, KLD mean and p99, top-1
agreement, quantization time. Each configuration is quantized with `qshard quantize`
(fakequant export, so every format evaluates) and evaluated with `qshard eval` against
the original on the first --windows windows of eval.txt.

Usage: bench/quality_table.py [--qshard build/qshard] [--windows 128] [--n-calib 128] [--set awq]
                              [--methods awq-joint,awq-joint+gptq]
(--set awq: the AWQ-family table, methods x formats as in docs/results.md)
Prints a markdown table (for docs/results.md).
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = [  # (method, format, extra args)
    ("rtn", "int8", ["--group-size", "128"]),
    ("gptq", "int8", ["--group-size", "128"]),
    ("rtn", "int4", ["--group-size", "128"]),
    ("gptq", "int4", ["--group-size", "128"]),
    ("gptq", "int4", ["--group-size", "128", "--act-order"]),
    ("rtn", "int4", ["--group-size", "128", "--asym"]),
    ("gptq", "int4", ["--group-size", "128", "--asym"]),
    ("rtn", "int3", ["--group-size", "128"]),
    ("gptq", "int3", ["--group-size", "128"]),
    ("rtn", "int2", ["--group-size", "64", "--asym"]),
    ("gptq", "int2", ["--group-size", "64", "--asym"]),
    ("rtn", "mxint8", []),
    ("rtn", "mxint4", []),
    ("gptq", "mxint4", []),
    ("rtn", "mxfp4", []),
    ("gptq", "mxfp4", []),
    ("rtn", "nvfp4", []),
    ("gptq", "nvfp4", []),
]

AWQ_METHODS = ["rtn", "gptq", "awq", "awq-joint", "awq-dh", "awq+gptq", "awq-joint+gptq", "smoothquant+gptq"]
AWQ_FORMATS = [("int4", ["--group-size", "128", "--asym"]), ("int3", ["--group-size", "128", "--asym"]),
               ("mxint4", []), ("mxint3", []), ("int8", ["--group-size", "128"])]
AWQ_CONFIGS = [(m, f, x) for f, x in AWQ_FORMATS for m in AWQ_METHODS]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--set", choices=["default", "awq"], default="default")
    ap.add_argument("--methods", help="comma-separated: only these methods' rows (to rerun a few rows)")
    a = ap.parse_args()
    configs = AWQ_CONFIGS if a.set == "awq" else CONFIGS
    if a.methods:
        configs = [c for c in configs if c[0] in a.methods.split(",")]
    calib = os.path.join(a.model, "text", "calib.txt")
    text = os.path.join(a.model, "text", "eval.txt")
    evalargs = ["--text", text, "--seqlen", "256", "--max-windows", str(a.windows), "--json", "--quiet"]
    base = json.loads(subprocess.run([a.qshard, "eval", "--model", a.model] + evalargs, check=True,
                                     stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
    print(f"# tiny-llama-gcide, calibration {a.n_calib} x 256 tokens of calib.txt, eval first "
          f"{a.windows} windows x 256 of eval.txt; unquantized ppl {base['ppl']:.4f}")
    print("| method | format | ppl | KLD mean | KLD p99 | top-1 | quantize s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, fmt, extra) in enumerate(configs):
            out = os.path.join(tmp, str(i))
            t0 = time.perf_counter()
            subprocess.run([a.qshard, "quantize", "--model", a.model, "--out", out, "--calib", calib,
                            "--n-calib", str(a.n_calib), "--calib-seqlen", "256", "--method", method,
                            "--format", fmt, "--export", "fakequant", "--quiet"] + extra,
                           check=True, stdout=subprocess.DEVNULL)
            dt = time.perf_counter() - t0
            r = json.loads(subprocess.run([a.qshard, "eval", "--model", out, "--reference", a.model] + evalargs,
                                          check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
            g = extra[extra.index("--group-size") + 1] if "--group-size" in extra else None
            flags = [x[2:] for x in extra if x.startswith("--") and x != "--group-size"]
            desc = " ".join([fmt + (f" g{g}" if g else "")] + flags)
            print(f"| {method} | {desc} | {r['ppl']:.4f} | {r['kld_mean']:.5f} | {r['kld_p99']:.5f} | "
                  f"{r['top1_agree']:.4f} | {dt:.1f} |", flush=True)


if __name__ == "__main__":
    main()
