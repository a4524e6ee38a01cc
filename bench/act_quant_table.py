#!/usr/bin/env python3
"""W8A8 / W4A8 quality on the tiny model: weight method x format x activation format ->
ppl, KLD mean and p99, top-1 agreement against the original.

Each row is `qshard quantize ... --act-format A --export E` (compressed-tensors for int8
activations, so the W8A8 / W4A8 file vLLM would load is what gets evaluated; hdf5 for
mxint8, which no engine format holds), then `qshard eval --model OUT --reference MODEL`,
which applies the activation format the export records. The "-" rows are the original
weights with `qshard eval --act-format A` (activations only).

Usage: bench/act_quant_table.py [--qshard build/qshard] [--windows 128] [--n-calib 128]
Prints a markdown table (for docs/results.md).
"""
import argparse
import json
import os
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INT8_CH = ["--format", "int8", "--group-size", "-1", "--sym"]
INT4_G128 = ["--format", "int4", "--group-size", "128", "--sym"]
CONFIGS = [  # (label, method or None, weight args, act format)
    ("-", None, [], "int8"),
    ("-", None, [], "mxint8"),
    ("int8 per-channel sym", "rtn", INT8_CH, "none"),
    ("int8 per-channel sym", "rtn", INT8_CH, "int8"),
    ("int8 per-channel sym", "rtn", INT8_CH, "mxint8"),
    ("int8 per-channel sym", "gptq", INT8_CH, "none"),
    ("int8 per-channel sym", "gptq", INT8_CH, "int8"),
    ("int8 per-channel sym", "gptq", INT8_CH, "mxint8"),
    ("int4 g128 sym", "rtn", INT4_G128, "int8"),
    ("int4 g128 sym", "gptq", INT4_G128, "none"),
    ("int4 g128 sym", "gptq", INT4_G128, "int8"),
    ("int4 g128 sym", "gptq", INT4_G128, "mxint8"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--n-calib", type=int, default=128)
    a = ap.parse_args()
    calib = os.path.join(a.model, "text", "calib.txt")
    text = os.path.join(a.model, "text", "eval.txt")
    evalargs = ["--text", text, "--seqlen", "256", "--max-windows", str(a.windows), "--json", "--quiet"]

    def evaluate(model, *extra):
        p = subprocess.run([a.qshard, "eval", "--model", model, "--reference", a.model] + evalargs + list(extra),
                           check=True, stdout=subprocess.PIPE, text=True)
        return json.loads(p.stdout.splitlines()[-1])

    base = evaluate(a.model)
    print(f"# tiny-llama-gcide, calibration {a.n_calib} x 256 tokens of calib.txt, eval first "
          f"{a.windows} windows x 256 of eval.txt; unquantized ppl {base['ppl']:.4f}")
    print("| weights | method | activations | export | ppl | KLD mean | KLD p99 | top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, method, wargs, act) in enumerate(CONFIGS):
            if method is None:
                r, export = evaluate(a.model, "--act-format", act), "-"
            else:
                export = "hdf5" if act == "mxint8" else "compressed-tensors"
                out = os.path.join(tmp, str(i))
                subprocess.run([a.qshard, "quantize", "--model", a.model, "--out", out, "--calib", calib,
                                "--n-calib", str(a.n_calib), "--calib-seqlen", "256", "--method", method,
                                "--act-format", act, "--export", export, "--quiet"] + wargs,
                               check=True, stdout=subprocess.DEVNULL)
                r = evaluate(out)
            print(f"| {label} | {method or '-'} | {act} | {export} | {r['ppl']:.4f} | {r['kld_mean']:.5f} | "
                  f"{r['kld_p99']:.5f} | {r['top1_agree']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
