#!/usr/bin/env python3
"""qshard beside the peer quantizers, back to back on one machine, same scheme, same
calibration tokens, same eval windows: llm-compressor 0.14's GPTQModifier and AWQModifier
(tools/llmcompressor_run.py, engines venv), AutoRound 0.15.1 (tools/autoround_run.py, engines
venv, --autoround-iters tuning steps per block; its "fake" format), the reference GPTQ
(IST-DASLab/gptq through tools/ist_gptq_llama.py, .venv) and qshard's gptq, awq and awq-joint.

Scheme int4 asymmetric, group 128 on the tiny model (--group-size 64 for SmolLM2). Both
texts are the tiny model's calib.txt / eval.txt, tokenized once by `qshard tokenize` with
the model's tokenizer; every tool reads the same token files (calibration: the first
N windows of 256 tokens, in order). Every checkpoint is evaluated by `qshard eval` against
the unquantized model (llm-compressor's compressed-tensors output is read as it is,
AutoRound's as dense dequantized weights).
Wall time is the whole process (load, calibrate, quantize, save) under /usr/bin/time, with
peak RSS. Prints the table, then the ratios qshard/peer (time; KLD mean).

    bench/peers.py [--model DIR] [--group-size 128] [--n-calib 128] [--windows 128]
                   [--ist-gptq-src /tmp/ist-gptq] [--rows llmc-gptq,qshard-gptq,...]
                   [--autoround-iters 200]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# qshard's rows: the method and the options that make it the peer's scheme. llm-compressor's
# GPTQModifier defaults to actorder "static" (columns by decreasing Hessian diagonal, group
# ranges fixed before reordering): qshard-gptq-static is the same, qshard-gptq the
# reference GPTQ's default order.
QSHARD_ROWS = {
    "qshard-gptq": ["--method", "gptq"],
    "qshard-gptq-static": ["--method", "gptq", "--act-order", "--static-groups"],
    "qshard-awq": ["--method", "awq"],
    "qshard-awq-joint": ["--method", "awq-joint"],
}
ROWS = ["llmc-gptq", "llmc-awq", "ist-gptq", "autoround"] + list(QSHARD_ROWS)


def timed(cmd, log):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r") as t, open(log, "w") as lf:
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name] + cmd, check=True,
                       stdout=lf, stderr=subprocess.STDOUT)
        return time.perf_counter() - t0, int(t.read().split()[-1]) / 1024


def command(row, a, calib, out):
    g = str(a.group_size)
    if row.startswith("llmc-"):
        return [a.engines_python, os.path.join(ROOT, "tools", "llmcompressor_run.py"),
                "--modifier", row[5:], "--model", a.model, "--calib", calib, "--n-calib",
                str(a.n_calib), "--seqlen", "256", "--group-size", g, "--out", out]
    if row == "autoround":  # auto-round's fake format: dequantized dense weights
        return [a.engines_python, os.path.join(ROOT, "tools", "autoround_run.py"), "--model", a.model,
                "--calib", calib, "--n-calib", str(a.n_calib), "--seqlen", "256", "--group-size", g,
                "--iters", str(a.autoround_iters), "--out", out]
    if row == "ist-gptq":
        return [a.python, os.path.join(ROOT, "tools", "ist_gptq_llama.py"), "--gptq-src",
                a.ist_gptq_src, "--model", a.model, "--calib", calib, "--n-calib",
                str(a.n_calib), "--seqlen", "256", "--wbits", "4", "--groupsize", g, "--asym",
                "--out", out]
    return [a.qshard, "quantize", "--model", a.model, "--out", out, "--calib", calib,
            "--n-calib", str(a.n_calib), "--calib-seqlen", "256"] + QSHARD_ROWS[row] + [
            "--format", "int4", "--group-size", g, "--asym", "--export", "fakequant", "--quiet"]


def engines_python():
    p = subprocess.run([os.path.join(ROOT, "launch", "engines_venv.sh"), "--python"],
                       stdout=subprocess.PIPE, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--ist-gptq-src", default="/tmp/ist-gptq")
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--engines-python", default=None, help="default: launch/engines_venv.sh --python")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--autoround-iters", type=int, default=200, help="autoround row: tuning steps per block")
    a = ap.parse_args()
    a.engines_python = a.engines_python or engines_python()
    rows = a.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"--rows: unknown {','.join(unknown)}; choose from {','.join(ROWS)}")
    if any(r.startswith("llmc-") or r == "autoround" for r in rows) and not a.engines_python:
        sys.exit("no engines venv: run launch/engines_venv.sh")
    if "ist-gptq" in rows and not os.path.isfile(os.path.join(a.ist_gptq_src, "gptq.py")):
        sys.exit(f"--ist-gptq-src {a.ist_gptq_src}: no gptq.py (see tools/ist_gptq_llama.py)")
    work = tempfile.mkdtemp(prefix="peers_")
    text_dir = os.path.join(ROOT, "models", "tiny-llama-gcide", "text")
    toks = {}
    for name in ("calib", "eval"):
        toks[name] = os.path.join(work, name + ".tokens")
        subprocess.run([a.qshard, "tokenize", "--model", a.model, "--text",
                        os.path.join(text_dir, name + ".txt"), "--out", toks[name], "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    evalargs = ["--tokens", toks["eval"], "--seqlen", "256", "--max-windows", str(a.windows),
                "--reference", a.model, "--json", "--quiet"]
    print(f"# {os.path.basename(a.model.rstrip('/'))}: int4 asym g{a.group_size}, calibration "
          f"{a.n_calib} x 256 tokens of calib.txt, eval {a.windows} x 256 of eval.txt; "
          f"{os.cpu_count()} cores; logs in {work}")
    print("| quantizer | wall s | peak RSS MiB | ppl | KLD mean | KLD p99 | top-1 |")
    print("|---|---|---|---|---|---|---|")
    res = {}
    for row in rows:
        out = os.path.join(work, row)
        try:
            dt, rss = timed(command(row, a, toks["calib"], out), out + ".log")
        except subprocess.CalledProcessError as e:
            print(f"| {row} | failed (exit {e.returncode}, see {out}.log) | | | | | |", flush=True)
            continue
        r = json.loads(subprocess.run([a.qshard, "eval", "--model", out] + evalargs, check=True,
                                      stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
        res[row] = (dt, r)
        print(f"| {row} | {dt:.1f} | {rss:.0f} | {r['ppl']:.4f} | {r['kld_mean']:.5f} | "
              f"{r['kld_p99']:.5f} | {r['top1_agree']:.4f} |", flush=True)
    pairs = [("qshard-gptq-static", "llmc-gptq"), ("qshard-gptq", "llmc-gptq"),
             ("qshard-gptq", "ist-gptq")] + \
            [(q, p) for q in ("qshard-awq", "qshard-awq-joint") for p in ("llmc-awq", "llmc-gptq", "ist-gptq", "autoround")]
    print("\n| qshard / peer | wall time | KLD mean |")
    print("|---|---|---|")
    for q, p in pairs:
        if q in res and p in res:
            print(f"| {q} / {p} | {res[q][0] / res[p][0]:.3f} | "
                  f"{res[q][1]['kld_mean'] / res[p][1]['kld_mean']:.3f} |")


if __name__ == "__main__":
    main()
