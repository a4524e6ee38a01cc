#!/usr/bin/env python3
"""End to end on the tiny random-weight checkpoints of the families beyond Llama
(tests/model/data/golden/rand-*, made by transformers with tools/make_arch_golden.py):
`qshard quantize` (rtn and gptq, int4 g32, fakequant and compressed-tensors), then
`qshard eval --model OUT --reference ORIGINAL` on random token streams.

Checks per family: every run evaluates; GPTQ's KLD is below RTN's (random weights,
random tokens: the margin is small, so only "below"); the export holds every tensor of
the source under the source's names (fakequant: same names, shapes and dtypes;
compressed-tensors: the quantized Linears as .weight_packed/.weight_scale, everything
else as stored); the report lists every Linear of the architecture table.
Env: QSHARD_BIN, QSHARD_SOURCE_DIR. Exit 0 pass, 1 fail.
"""
import json
import os
import random
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, check, run, verdict  # noqa: E402

GOLDEN = os.path.join(os.environ["QSHARD_SOURCE_DIR"], "tests", "model", "data", "golden")
FAMILIES = ["rand-qwen3"]
SEQLEN, CALIB_WINDOWS, EVAL_WINDOWS = 32, 16, 8
FORMAT = ["--format", "int4", "--group-size", "32"]


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def tensors_of(model_dir):
    out = {}
    for f in sorted(os.listdir(model_dir)):
        if f.startswith("model") and f.endswith(".safetensors"):  # not golden.safetensors
            out.update(safetensors_header(os.path.join(model_dir, f)))
    return out


def token_file(path, vocab, n, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{n}i", *[rng.randrange(vocab) for _ in range(n)]))


def evaluate(out, ref, tokens):
    args = [QBIN, "eval", "--model", out, "--reference", ref, "--tokens", tokens, "--seqlen",
            str(SEQLEN), "--json", "--quiet"]
    return json.loads(run(args).strip().splitlines()[-1])


def check_family(name, tmp):
    src = os.path.join(GOLDEN, name)
    with open(os.path.join(src, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    calib, evalt = os.path.join(tmp, name + "-calib.tokens"), os.path.join(tmp, name + "-eval.tokens")
    token_file(calib, vocab, SEQLEN * CALIB_WINDOWS, 1)
    token_file(evalt, vocab, SEQLEN * EVAL_WINDOWS, 2)
    source = tensors_of(src)
    kld = {}
    for method in ("rtn", "gptq"):
        for export in ("fakequant", "compressed-tensors"):
            out = os.path.join(tmp, f"{name}-{method}-{export}")
            run([QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib", calib,
                 "--n-calib", str(CALIB_WINDOWS), "--calib-seqlen", str(SEQLEN), "--method", method,
                 "--export", export] + FORMAT)
            r = evaluate(out, src, evalt)
            kld[(method, export)] = r["kld_mean"]
            print(f"  {name:12s} {method:5s} {export:20s} ppl {r['ppl']:.4f} kld {r['kld_mean']:.5f} "
                  f"top1 {r['top1_agree']:.4f}")
            check(0 < r["kld_mean"] < 1.0, f"{name} {method} {export}: kld {r['kld_mean']:.4g} in (0, 1)")
            got = tensors_of(out)
            if export == "fakequant":
                same = {k: (v["dtype"], v["shape"]) for k, v in got.items()} == \
                       {k: (v["dtype"], v["shape"]) for k, v in source.items()}
                check(same, f"{name} {method} fakequant: the source's tensor names, shapes and dtypes")
            else:
                with open(os.path.join(out, "quantize_report.json")) as f:
                    modules = [m["module"] for m in json.load(f)["modules"] if m["format"] != "skipped"]
                missing = [m for m in modules if m + ".weight_packed" not in got]
                dense = [k for k in source if not any(k == m + ".weight" for m in modules)]
                check(not missing and all(k in got for k in dense),
                      f"{name} {method} compressed-tensors: {len(modules)} packed Linears, "
                      f"{len(dense)} dense tensors by their source names (missing {missing[:3]})")
    check(kld[("gptq", "fakequant")] < kld[("rtn", "fakequant")],
          f"{name}: gptq kld {kld[('gptq', 'fakequant')]:.4g} < rtn {kld[('rtn', 'fakequant')]:.4g}")


def main():
    with tempfile.TemporaryDirectory(prefix="qshard-arch-") as tmp:
        for name in FAMILIES:
            try:
                check_family(name, tmp)
            except RuntimeError as e:
                check(False, f"{name}: {e}")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
