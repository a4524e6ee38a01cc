#!/usr/bin/env python3
"""Tokenizer throughput: `qshard tokenize --json` vs Hugging Face's `tokenizers`, one thread.

Both encode the same text as one string with the same tokenizer.json. Timed, best of
--repeat runs each, loading excluded from both:
  qshard       the "seconds" qshard tokenize --json reports (tokenizing only), OMP_NUM_THREADS=1
  tokenizers   Tokenizer.encode(text, add_special_tokens=False) in this process, with
               TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1
tokens/s = tokens / seconds (qshard's count includes its BOS); ratio = qshard / tokenizers.
"same" says whether qshard's ids equal [BOS] + the tokenizers ids. The qshard process's
wall time (load + tokenize + write) is shown too.

Texts: the tiny model's eval text, and the tokenizer corpus concatenated (invalid UTF-8
decoded with errors="replace" for tokenizers, as qshard does).
Tokenizers: llama-bpe and qwen2 from QSHARD_VOCAB_DIR/tokenizer-json (launch/fetch_testdata.sh),
and SmolLM2 from QSHARD_SMOLLM2_DIR when it has a tokenizer.json.

Usage: .venv/bin/python bench/bench_tokenizer.py [--qshard build/qshard] [--repeat 3]
           [--text FILE]... [--tokenizer NAME=DIR]... [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from array import array

# Before `tokenizers` is imported: one thread, like qshard's tokenize.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "io", "data", "tokenizer_corpus")


def default_tokenizers():
    found = []
    vocab = os.path.join(os.environ.get("QSHARD_VOCAB_DIR", os.path.expanduser(
        "~/.cache/qshard/llama-vocab-0.3.36")), "tokenizer-json")
    for name in ("llama-bpe", "qwen2"):
        found.append((name, os.path.join(vocab, name)))
    smol = os.environ.get("QSHARD_SMOLLM2_DIR",
                          os.path.expanduser("~/.cache/qshard/smollm2-135m-instruct"))
    if os.path.isfile(os.path.join(smol, "tokenizer.json")):
        found.append(("smollm2", smol))
    else:
        print(f"# note: {smol} has no tokenizer.json (launch/fetch_testdata.sh): SmolLM2 skipped")
    return found


def corpus_file(scratch):
    """The corpus concatenated into one file (sorted names)."""
    path = os.path.join(scratch, "corpus.txt")
    with open(path, "wb") as out:
        for name in sorted(os.listdir(CORPUS)):
            if name.endswith(".txt"):
                with open(os.path.join(CORPUS, name), "rb") as f:
                    out.write(f.read())
    return path


def time_qshard(qshard, directory, text_path, out_path, repeat):
    best = wall = None
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([qshard, "tokenize", "--model", directory, "--text", text_path,
                               "--out", out_path, "--json", "--quiet"],
                              capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"bench_tokenizer: qshard tokenize failed: {proc.stderr.strip()}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        best = report["seconds"] if best is None else min(best, report["seconds"])
        wall = elapsed if wall is None else min(wall, elapsed)
    ids = array("i")
    with open(out_path, "rb") as f:
        ids.frombytes(f.read())
    if sys.byteorder != "little":
        ids.byteswap()
    return list(ids), report["bos"], best, wall


def time_tokenizers(tok, text, repeat):
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
    return ids, best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qshard", default=os.environ.get("QSHARD_BIN",
                                                       os.path.join(ROOT, "build", "qshard")))
    ap.add_argument("--text", action="append", default=[],
                    help="text file (repeatable; default: the tiny model's eval text and the "
                         "corpus concatenated)")
    ap.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR",
                    help="tokenizer directory (repeatable; default: llama-bpe, qwen2, smollm2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import tokenizers
    from tokenizers import Tokenizer

    tokenizer_dirs = ([tuple(t.split("=", 1)) for t in args.tokenizer] or default_tokenizers())
    for name, directory in tokenizer_dirs:
        if not os.path.isfile(os.path.join(directory, "tokenizer.json")):
            sys.exit(f"bench_tokenizer: {directory} has no tokenizer.json for {name}; "
                     "run launch/fetch_testdata.sh")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        texts = args.text or [os.path.join(ROOT, "models", "tiny-llama-gcide", "text", "eval.txt"),
                              corpus_file(scratch)]
        for text_path in texts:
            with open(text_path, "rb") as f:
                data = f.read()
            text = data.decode("utf-8", errors="replace")
            label = os.path.basename(text_path)
            for name, directory in tokenizer_dirs:
                tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
                ref, ref_s = time_tokenizers(tok, text, args.repeat)
                got, bos, q_s, q_wall = time_qshard(args.qshard, directory, text_path,
                                                    os.path.join(scratch, "out.tokens"),
                                                    args.repeat)
                same = got == ([bos] if bos is not None else []) + ref
                rows.append({"text": label, "bytes": len(data), "tokenizer": name,
                             "tokens": len(got), "qshard_s": q_s, "qshard_wall_s": q_wall,
                             "tokenizers_s": ref_s, "qshard_tok_s": len(got) / q_s,
                             "tokenizers_tok_s": len(ref) / ref_s,
                             "ratio": (len(got) / q_s) / (len(ref) / ref_s), "same": same})

    print(f"# single-thread tokenize, best of {args.repeat}, loading excluded; "
          f"tokenizers {tokenizers.__version__}")
    print(f"# {'text':12s} {'bytes':>9s} {'tokenizer':10s} {'tokens':>8s} {'qshard tok/s':>13s} "
          f"{'tokenizers tok/s':>16s} {'ratio':>6s} {'qshard wall s':>13s} same")
    for r in rows:
        print(f"  {r['text'][:12]:12s} {r['bytes']:9d} {r['tokenizer']:10s} {r['tokens']:8d} "
              f"{r['qshard_tok_s']:13.0f} {r['tokenizers_tok_s']:16.0f} {r['ratio']:6.2f} "
              f"{r['qshard_wall_s']:13.3f} {'yes' if r['same'] else 'NO'}")
    if args.json:
        print(json.dumps({"rows": rows, "repeat": args.repeat,
                          "tokenizers": tokenizers.__version__}))
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
