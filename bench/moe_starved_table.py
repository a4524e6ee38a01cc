#!/usr/bin/env python3
"""Starved MoE experts: KLD of `--moe-starved rtn | all-tokens | routed` on the tiny MoE
checkpoints (tests/model/data/golden/rand-*, e2e_arch_families' models), with calibration
so short that the router leaves some experts under --moe-min-tokens (16) tokens.

Each cell: `qshard quantize --method gptq --format int4 --group-size 16 --calib RANDOM
--n-calib N --calib-seqlen 32 --moe-starved MODE`, then `qshard eval --reference ORIGINAL`
on 16 x 32 random tokens; KLD mean averaged over calibration seeds. "starved" is the mean
number of expert groups (gate/up or down of one expert) under 16 routed tokens.

Usage: bench/moe_starved_table.py [--qshard build/qshard] [--seeds 3] [--n-calib 1,2]
       [--sweep-min-tokens 16,32,64]   (instead: rtn at each --moe-min-tokens)
Prints a markdown table (for docs/results.md).
"""
import argparse
import json
import os
import random
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "model", "data", "golden")
FAMILIES = ["rand-mixtral", "rand-qwen2-moe", "rand-qwen3-moe"]
MODES = ["rtn", "all-tokens", "routed"]
SEQLEN, EVAL_WINDOWS = 32, 16


def token_file(path, vocab, n, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{n}i", *[rng.randrange(vocab) for _ in range(n)]))


def run(cmd):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def cell(qbin, src, out, calib, n_calib, mode, evalt, min_tokens=16):
    run([qbin, "quantize", "--model", src, "--out", out, "--quiet", "--overwrite", "--calib", calib,
         "--n-calib", str(n_calib), "--calib-seqlen", str(SEQLEN), "--method", "gptq", "--format", "int4",
         "--group-size", "16", "--export", "fakequant", "--moe-starved", mode,
         "--moe-min-tokens", str(min_tokens)])
    with open(os.path.join(out, "quantize_report.json")) as f:
        mods = json.load(f)["modules"]
    groups = {m["module"].rsplit(".", 1)[0] + (".down" if m["module"].endswith(("w2", "down_proj")) else ".gu")
              for m in mods if ".experts." in m["module"] and 0 <= m.get("routed_tokens", -1) < 16}
    r = json.loads(run([qbin, "eval", "--model", out, "--reference", src, "--tokens", evalt, "--seqlen",
                        str(SEQLEN), "--json", "--quiet"]).strip().splitlines()[-1])
    return r["kld_mean"], len(groups)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-calib", default="1,2")
    ap.add_argument("--sweep-min-tokens", default="",
                    help="instead: --moe-starved rtn at these --moe-min-tokens (comma-separated)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="qshard-moe-starved-")
    if a.sweep_min_tokens:
        return sweep(a, tmp, [int(x) for x in a.sweep_min_tokens.split(",")])
    print("| model | calib tokens | starved groups | " + " | ".join(f"KLD {m}" for m in MODES) + " |")
    print("|---|---|---|" + "---|" * len(MODES))
    for fam in FAMILIES:
        src, vocab, evalt = family_inputs(fam, tmp)
        for n in [int(x) for x in a.n_calib.split(",")]:
            kld = {m: 0.0 for m in MODES}
            starved = 0
            for seed in range(a.seeds):
                calib = os.path.join(tmp, f"{fam}-{n}-{seed}.tokens")
                token_file(calib, vocab, SEQLEN * n, seed)
                for m in MODES:
                    k, s = cell(a.qshard, src, os.path.join(tmp, "out"), calib, n, m, evalt)
                    kld[m] += k / a.seeds
                    starved += s if m == "rtn" else 0
            print(f"| {fam} | {n * SEQLEN} | {starved / a.seeds:.1f} | "
                  + " | ".join(f"{kld[m]:.5f}" for m in MODES) + " |", flush=True)


def family_inputs(fam, tmp):
    """The family's checkpoint folder, vocabulary size and its evaluation token file."""
    src = os.path.join(GOLDEN, fam)
    with open(os.path.join(src, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    evalt = os.path.join(tmp, f"{fam}-eval.tokens")
    token_file(evalt, vocab, SEQLEN * EVAL_WINDOWS, 1000)
    return src, vocab, evalt


def sweep(a, tmp, thresholds):
    """KLD of --moe-starved rtn as the threshold rises (more experts RTN instead of GPTQ)."""
    print("| model | calib tokens | " + " | ".join(f"KLD min-tokens {t}" for t in thresholds) + " |")
    print("|---|---|" + "---|" * len(thresholds))
    for fam in FAMILIES:
        src, vocab, evalt = family_inputs(fam, tmp)
        for n in [int(x) for x in a.n_calib.split(",")]:
            kld = {t: 0.0 for t in thresholds}
            for seed in range(a.seeds):
                calib = os.path.join(tmp, f"{fam}-{n}-{seed}.tokens")
                token_file(calib, vocab, SEQLEN * n, seed)
                for t in thresholds:
                    kld[t] += cell(a.qshard, src, os.path.join(tmp, "out"), calib, n, "rtn", evalt, t)[0] / a.seeds
            print(f"| {fam} | {n * SEQLEN} | " + " | ".join(f"{kld[t]:.5f}" for t in thresholds) + " |", flush=True)


if __name__ == "__main__":
    main()
