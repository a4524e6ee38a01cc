#!/usr/bin/env python3
"""Mixed precision to a bits-per-weight budget against uniform formats (issue 18 item 3).

Each row is one `qshard quantize --method M --export fakequant` (uniform --format, or
--target-bpw B with --bpw-formats LIST), evaluated with `qshard eval` against the original
on the first --windows windows x 256 tokens of the tiny model's eval.txt. Bits per weight
count each group's 16-bit scale and (asymmetric) zero point, over every quantized Linear
(src/pipeline/bpw_plan.h); the --target-bpw rows take them from the plan in
quantize_report.json. Rows at the uniform formats' own bits compare at equal bits.

Usage: bench/mixed_bpw_table.py [--qshard build/qshard] [--model DIR | --set smollm2]
                                [--method gptq] [--n-calib 128] [--windows 128]
                                [--targets 3.0,3.2969,3.5,4.0,4.3125,4.5] [--formats LIST]
                                [--kld-windows 2] [--uniform int3:64,int4:64] [--no-uniform]
Prints a markdown table (for docs/results.md).
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2_DIR = os.path.join(os.environ.get("QSHARD_CACHE", os.path.expanduser("~/.cache/qshard")),
                           "smollm2-135m-instruct")
# int2 g64 makes 3.0 reachable (int3 g64 asym alone costs 3.297 bits).
DEFAULT_FORMATS = "int2:g64,int3:g128,int3:g64,int4:g128,int4:g64,int4:g32,int8:g128"
# SmolLM2's 576 input features take no g128: g192 instead (576 = 3 x 192, 1536 = 8 x 192).
SMOLLM2_FORMATS = "int2:g64,int3:g192,int3:g64,int4:g192,int4:g64,int4:g32,int8:g192"


def bits_int(bits, group, asym=True):
    return bits + (16 + (bits if asym else 0)) / group


def run_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--set", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--method", default="gptq")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--targets", default="3.0,3.2969,3.5,4.0,4.3125,4.5")
    ap.add_argument("--formats", help=f"--bpw-formats (default {DEFAULT_FORMATS}; --set smollm2: {SMOLLM2_FORMATS})")
    ap.add_argument("--kld-windows", default="2", help="--bpw-kld-windows of the --target-bpw rows")
    ap.add_argument("--uniform", default="int3:64,int4:64", help="uniform rows FORMAT:GROUP (empty: none)")
    ap.add_argument("--no-uniform", action="store_true", help="only the --target-bpw rows")
    a = ap.parse_args()
    if a.set == "smollm2" and a.model == ap.get_default("model"):
        a.model = SMOLLM2_DIR
    a.formats = a.formats or (SMOLLM2_FORMATS if a.set == "smollm2" else DEFAULT_FORMATS)
    work = tempfile.mkdtemp(prefix="mixed_bpw_")
    text_dir = os.path.join(ROOT, "models", "tiny-llama-gcide", "text")
    tok = {}
    for name in ("calib", "eval"):
        tok[name] = os.path.join(work, name + ".tokens")
        subprocess.run([a.qshard, "tokenize", "--model", a.model, "--text", os.path.join(text_dir, name + ".txt"),
                        "--out", tok[name], "--quiet"], check=True, stdout=subprocess.DEVNULL)
    evalargs = ["--tokens", tok["eval"], "--seqlen", "256", "--max-windows", str(a.windows), "--json", "--quiet"]
    base = run_json([a.qshard, "eval", "--model", a.model] + evalargs)
    print(f"# {os.path.basename(a.model.rstrip('/'))}, --method {a.method} --asym, calibration {a.n_calib} x 256 "
          f"tokens of calib.txt, eval first {a.windows} windows x 256 of eval.txt; unquantized ppl {base['ppl']:.4f}")
    print(f"# --target-bpw rows: --bpw-formats {a.formats} --bpw-kld-windows {a.kld_windows}")
    print("| config | bits/weight | ppl | KLD mean | KLD p99 | top-1 | quantize s |")
    print("|---|---|---|---|---|---|---|")
    rows = [(f"uniform {f} g{g} asym", ["--format", f, "--group-size", g], bits_int(int(f[3:]), int(g)))
            for f, g in (u.split(":") for u in a.uniform.split(",") if u) if not a.no_uniform]
    rows += [(f"--target-bpw {t}", ["--target-bpw", t, "--bpw-formats", a.formats, "--bpw-kld-windows", a.kld_windows],
              None)
             for t in a.targets.split(",") if t]
    for i, (name, extra, bpw) in enumerate(rows):
        out = os.path.join(work, f"o{i}")
        t0 = time.perf_counter()
        subprocess.run([a.qshard, "quantize", "--model", a.model, "--out", out, "--calib", tok["calib"],
                        "--n-calib", str(a.n_calib), "--calib-seqlen", "256", "--method", a.method, "--asym",
                        "--export", "fakequant", "--quiet"] + extra, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        if bpw is None:
            with open(os.path.join(out, "quantize_report.json")) as f:
                bpw = json.load(f)["bpw_plan"]["bits_per_weight"]
        r = run_json([a.qshard, "eval", "--model", out, "--reference", a.model] + evalargs)
        print(f"| {name} | {bpw:.4f} | {r['ppl']:.4f} | {r['kld_mean']:.5f} | {r['kld_p99']:.5f} | "
              f"{r['top1_agree']:.4f} | {dt:.1f} |", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
