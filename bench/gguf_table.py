#!/usr/bin/env python3
"""Side by side in llama.cpp: llama-quantize (without and with an imatrix made by
llama-imatrix from the same calibration text) against qshard's rtn / gptq / awq-joint /
awq-joint+gptq written into the same llama.cpp mix (--format gguf:MIX --export gguf), each scored by
llama-perplexity with --kl-divergence against the unquantized model (qshard's F32 GGUF).

Methods `target-bpw:METHOD` (e.g. target-bpw:gptq): qshard's `--target-bpw B --format
gguf:MIX --method METHOD`, B the bits per weight of the mix's decoder Linears as
llama-quantize's file holds them (block bytes), so the file is at most the mix's size:
token_embd/output get the mix's types, the plan picks every Linear's type from
--bpw-formats (K-quants on rows a 256-block does not divide count and are stored as
llama.cpp's 32-block fallback).

Prints one markdown table: mix, method, file size, bits per weight (tensor data over all
weights), bits per weight of the decoder Linears, PPL, KLD mean, KLD p99, same top token %.
Needs launch/build_llama_cpp.sh.

  .venv/bin/python bench/gguf_table.py --model models/tiny-llama-gcide
  .venv/bin/python bench/gguf_table.py --model ~/.cache/qshard/smollm2-135m-instruct \\
      --mixes Q4_0,Q4_K_S,Q4_K_M --chunks 100 --ctx 256
  .venv/bin/python bench/gguf_table.py --mixes Q3_K_M,Q4_K_M \\
      --methods llama-quantize+imatrix,gptq,target-bpw:gptq
Any mix qshard writes (--mixes IQ4_XS,Q2_K,Q3_K_S,Q3_K_L ...; docs/formats-gguf.md).
"""
import argparse
import math
import os
import re
import subprocess
import sys
import tempfile

import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LBIN = os.environ.get("QSHARD_LLAMA_CPP_BIN", os.path.expanduser("~/.cache/qshard/llama-cpp-build-0.3.36/bin"))
TINY = os.path.join(ROOT, "models", "tiny-llama-gcide")


def sh(cmd, log=None):
    with open(log or os.devnull, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        tail = open(log).read()[-3000:] if log else ""
        sys.exit(f"failed: {' '.join(cmd)}\n{tail}")


def data_bytes(path):
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def n_weights(path):
    return sum(int(t.n_elements) for t in gguf.GGUFReader(path).tensors)


LINEAR = re.compile(r"blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$")


def linear_bpw(path):
    """Bits per weight of the decoder Linears (what --target-bpw budgets), from block bytes."""
    ts = [t for t in gguf.GGUFReader(path).tensors if LINEAR.match(t.name)]
    return 8.0 * sum(int(t.n_bytes) for t in ts) / sum(int(t.n_elements) for t in ts)


def score(model, base_kld, a, log):
    # llama.cpp's asynchronous logger can lose its last lines at exit (never flushed, upstream
    # issue 22142); run again when the summary is missing.
    for _ in range(4):
        sh([os.path.join(LBIN, "llama-perplexity"), "-m", model, "-f", a.text, "-c", str(a.ctx), "-b", str(a.ctx),
            "--chunks", str(a.chunks), "-t", str(a.threads), "--kl-divergence-base", base_kld, "--kl-divergence"], log)
        out = open(log).read()
        if re.search(r"Same top p:", out):
            break
    get = lambda pat: float(re.search(pat, out).group(1))
    return {"ppl": get(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"), "kld": get(r"Mean\s+KLD:\s*([0-9.]+)"),
            "p99": get(r"99\.0%\s+KLD:\s*([0-9.]+)"), "top": get(r"Same top p:\s*([0-9.]+)")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=TINY)
    ap.add_argument("--calib", default=os.path.join(TINY, "text", "calib.txt"), help="calibration text (both tools)")
    ap.add_argument("--text", default=os.path.join(TINY, "text", "eval.txt"), help="evaluation text")
    ap.add_argument("--mixes", default="Q4_0,Q4_K_S,Q4_K_M")
    ap.add_argument("--methods", default="llama-quantize,llama-quantize+imatrix,rtn,gptq,awq-joint+gptq")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=32, help="evaluation chunks of --ctx tokens")
    ap.add_argument("--calib-chunks", type=int, default=64, help="calibration windows of --ctx tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--bpw-formats", default="q3_k,q4_k,q5_k,q6_k,q8_0", help="target-bpw rows: the candidates")
    ap.add_argument("--bpw-kld-windows", default="2", help="target-bpw rows: qshard's --bpw-kld-windows")
    a = ap.parse_args()
    tmp = None if a.keep else tempfile.TemporaryDirectory(prefix="qshard-gguf-table-")
    work = a.keep or tmp.name
    os.makedirs(work, exist_ok=True)
    calib = ["--calib", a.calib, "--n-calib", str(a.calib_chunks), "--calib-seqlen", str(a.ctx)]

    def qshard(out, *args):
        if not os.path.exists(os.path.join(out, "model.gguf")):
            sh([a.qshard, "quantize", "--model", a.model, "--out", out, "--quiet", "--overwrite", "--export", "gguf"]
               + calib + list(args), out + ".log")
        return os.path.join(out, "model.gguf")

    base = qshard(os.path.join(work, "base"), "--method", "rtn", "--format", "q8_0", "--skip", ".", "--gguf-dense", "f32")
    base_kld = os.path.join(work, "base.kld")
    sh([os.path.join(LBIN, "llama-perplexity"), "-m", base, "-f", a.text, "-c", str(a.ctx), "-b", str(a.ctx),
        "--chunks", str(a.chunks), "-t", str(a.threads), "--kl-divergence-base", base_kld], base_kld + ".log")
    imatrix = os.path.join(work, "imatrix.gguf")
    methods = a.methods.split(",")
    if "llama-quantize+imatrix" in methods and not os.path.exists(imatrix):
        sh([os.path.join(LBIN, "llama-imatrix"), "-m", base, "-f", a.calib, "-c", str(a.ctx), "--chunks",
            str(a.calib_chunks), "-t", str(a.threads), "-o", imatrix], imatrix + ".log")
    weights = n_weights(base)
    rows = []
    for mix in a.mixes.split(","):
        for m in methods:
            out = os.path.join(work, f"{mix}-{m}")
            if m.startswith("llama-quantize"):
                path = out + ".gguf"
                extra = ["--imatrix", imatrix] if m.endswith("imatrix") else []
                sh([os.path.join(LBIN, "llama-quantize")] + extra + [base, path, mix, str(a.threads)], out + ".log")
            elif m.startswith("target-bpw:"):
                ref = os.path.join(work, f"{mix}-llama-quantize.gguf")  # the mix's layout, no imatrix
                if not os.path.exists(ref):
                    sh([os.path.join(LBIN, "llama-quantize"), base, ref, mix, str(a.threads)], ref + ".log")
                target = math.floor(linear_bpw(ref) * 1e6) / 1e6  # never above the mix's bytes
                path = qshard(out, "--method", m.split(":", 1)[1], "--format", f"gguf:{mix}", "--target-bpw",
                              f"{target:.6f}", "--bpw-formats", a.bpw_formats, "--bpw-kld-windows", a.bpw_kld_windows)
                m = f"{m} {target:.4f}"
            else:
                try:
                    path = qshard(out, "--method", m, "--format", f"gguf:{mix}")
                except SystemExit as e:  # a method that does not take the mix
                    print(f"# {mix} {m}: {str(e).splitlines()[-1]}", file=sys.stderr)
                    continue
            r = score(path, base_kld, a, out + ".ppl.log")
            size = data_bytes(path)
            rows.append((mix, m, size, 8.0 * size / weights, linear_bpw(path), r))
            print(f"# {mix} {m}: KLD {r['kld']:.5f}", file=sys.stderr, flush=True)
    print(f"model {a.model}: {weights} weights; {a.chunks} x {a.ctx} eval tokens ({os.path.basename(a.text)}), "
          f"{a.calib_chunks} x {a.ctx} calibration tokens ({os.path.basename(a.calib)})")
    if any(m.startswith("target-bpw:") for m in methods):
        print(f"target-bpw rows: --bpw-formats {a.bpw_formats} --bpw-kld-windows {a.bpw_kld_windows}")
    print("| mix | method | tensor data MiB | bits/weight | Linears bits/weight | PPL | KLD mean | KLD p99 | same top % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mix, m, size, bpw, lbpw, r in rows:
        print(f"| {mix} | {m} | {size / 2**20:.2f} | {bpw:.3f} | {lbpw:.4f} | {r['ppl']:.4f} | {r['kld']:.5f} | "
              f"{r['p99']:.5f} | {r['top']:.2f} |")


if __name__ == "__main__":
    main()
