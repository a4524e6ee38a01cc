#!/usr/bin/env python3
"""Quality table on the tiny model: method x format -> ppl, KLD mean and p99, top-1
agreement, quantization time. Each configuration is quantized with `qshard quantize`
(fakequant export, so every format evaluates) and evaluated with `qshard eval` against
the original on the first --windows windows of eval.txt.

Usage: bench/quality_table.py [--qshard build/qshard] [--windows 128] [--n-calib 128] [--set awq]
                              [--methods awq-joint,awq-joint+gptq]
       bench/quality_table.py --set smollm2 [--ist-gptq-src /tmp/ist-gptq] [--formats int4-g64]
(--set awq: the AWQ-family table, methods x formats as in docs/results.md; --set smollm2:
SmolLM2-135M from launch/fetch_testdata.sh's cache, int4/int3 asym at g64, g32 and per
channel, with peak RSS, and beside each format the reference GPTQ (IST-DASLab/gptq's own
llama_sequential through tools/ist_gptq_llama.py) on the same calibration tokens.)
Both texts are the tiny model's calib.txt / eval.txt, tokenized once by `qshard tokenize`
with the evaluated model's tokenizer; every tool sees the same token files.
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

SMOL_METHODS = ["rtn", "gptq", "awq", "awq-joint", "awq+gptq", "awq-joint+gptq"]
SMOL_FORMATS = {f"{fmt}-{name}": (fmt, ["--group-size", g, "--asym"])
                for fmt in ("int4", "int3") for name, g in (("g64", "64"), ("g32", "32"), ("channel", "-1"))}
SMOLLM2_DIR = os.path.join(os.environ.get("QSHARD_CACHE", os.path.expanduser("~/.cache/qshard")),
                           "smollm2-135m-instruct")


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r") as t:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name] + cmd, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0, int(t.read().split()[-1]) / 1024


def tokenize(qshard, model, text, out):
    subprocess.run([qshard, "tokenize", "--model", model, "--text", text, "--out", out, "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def ist_gptq_run(a, fmt, extra, calib, out):
    g = extra[extra.index("--group-size") + 1]
    return timed([a.python, os.path.join(ROOT, "tools", "ist_gptq_llama.py"), "--gptq-src", a.ist_gptq_src,
                  "--model", a.model, "--calib", calib, "--n-calib", str(a.n_calib), "--seqlen", "256",
                  "--wbits", fmt[3:], "--groupsize", g, "--asym", "--out", out])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--set", choices=["default", "awq", "smollm2"], default="default")
    ap.add_argument("--formats", help="--set smollm2: comma-separated subset of " + ",".join(SMOL_FORMATS))
    ap.add_argument("--ist-gptq-src", help="--set smollm2: folder with the reference gptq code (adds its rows)")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--methods", help="comma-separated: only these methods' rows (to rerun a few rows)")
    a = ap.parse_args()
    configs = AWQ_CONFIGS if a.set == "awq" else CONFIGS
    if a.set == "smollm2":
        if a.model == ap.get_default("model"):
            a.model = SMOLLM2_DIR
        formats = a.formats.split(",") if a.formats else list(SMOL_FORMATS)
        configs = [(m, *SMOL_FORMATS[f]) for f in formats for m in SMOL_METHODS + ["ist-gptq"]]
        if not a.ist_gptq_src:
            configs = [c for c in configs if c[0] != "ist-gptq"]
    if a.methods:
        configs = [c for c in configs if c[0] in a.methods.split(",")]
    work = tempfile.mkdtemp(prefix="quality_table_")
    text_dir = os.path.join(ROOT, "models", "tiny-llama-gcide", "text")
    calib = tokenize(a.qshard, a.model, os.path.join(text_dir, "calib.txt"), os.path.join(work, "calib.tokens"))
    text = tokenize(a.qshard, a.model, os.path.join(text_dir, "eval.txt"), os.path.join(work, "eval.tokens"))
    evalargs = ["--tokens", text, "--seqlen", "256", "--max-windows", str(a.windows), "--json", "--quiet"]
    base = json.loads(subprocess.run([a.qshard, "eval", "--model", a.model] + evalargs, check=True,
                                     stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
    print(f"# {os.path.basename(a.model.rstrip('/'))}, calibration {a.n_calib} x 256 tokens of calib.txt, eval first "
          f"{a.windows} windows x 256 of eval.txt; unquantized ppl {base['ppl']:.4f}")
    print("| method | format | ppl | KLD mean | KLD p99 | top-1 | quantize s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, fmt, extra) in enumerate(configs):
            out = os.path.join(tmp, str(i))
            if method == "ist-gptq":
                dt, rss = ist_gptq_run(a, fmt, extra, calib, out)
            else:
                dt, rss = timed([a.qshard, "quantize", "--model", a.model, "--out", out, "--calib", calib,
                                 "--n-calib", str(a.n_calib), "--calib-seqlen", "256", "--method", method,
                                 "--format", fmt, "--export", "fakequant", "--quiet"] + extra)
            r = json.loads(subprocess.run([a.qshard, "eval", "--model", out, "--reference", a.model] + evalargs,
                                          check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
            g = extra[extra.index("--group-size") + 1] if "--group-size" in extra else None
            flags = [x[2:] for x in extra if x.startswith("--") and x != "--group-size"]
            desc = " ".join([fmt + (f" g{g}" if g else "")] + flags)
            print(f"| {method} | {desc} | {r['ppl']:.4f} | {r['kld_mean']:.5f} | {r['kld_p99']:.5f} | "
                  f"{r['top1_agree']:.4f} | {dt:.1f} | {rss:.0f} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
