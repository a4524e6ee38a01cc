#!/usr/bin/env python3
"""qshard tokenize against Hugging Face's `tokenizers` package, on the tokenizer corpus.

For every converted llama.cpp vocabulary (QSHARD_VOCAB_DIR/tokenizer-json/NAME, made by
tools/gguf_vocab_to_tokenizer_json.py) and SmolLM2-135M-Instruct (QSHARD_SMOLLM2_DIR), and
every file of tests/io/data/tokenizer_corpus, runs
    $QSHARD_BIN tokenize --model DIR --text FILE --out X.tokens --json
and compares the little-endian int32 ids with
    Tokenizer.from_file(DIR/tokenizer.json).encode(text, add_special_tokens=False).ids
prefixed with the BOS id that qshard reports (--json "bos"); that BOS must be the one the
reference's post-processor adds (encode(..., add_special_tokens=True)). The text is the file's
bytes decoded with errors="replace": qshard replaces each maximal invalid UTF-8 subpart with
U+FFFD the same way. On a mismatch it prints the file, the first differing position, both id
sequences around it and their pieces.

Usage: QSHARD_BIN=build/qshard QSHARD_VOCAB_DIR=... [QSHARD_SMOLLM2_DIR=...]
       .venv/bin/python tests/io/check_tokenizer_vs_hf.py [NAME...] [--corpus DIR]
NAME is a vocabulary name or "smollm2". Exit 0 when everything matches, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import check_vocab_converter  # noqa: E402
import gguf_vocab_to_tokenizer_json  # noqa: E402

CORPUS = os.path.join(HERE, "data", "tokenizer_corpus")
CONTEXT = 6  # ids shown on each side of the first difference


def need(condition, message):
    if not condition:
        sys.exit(f"check_tokenizer_vs_hf: {message}")


def tokenizer_dirs(names, scratch):
    """(name, directory) for each tokenizer to check."""
    vocab_dir = os.environ.get("QSHARD_VOCAB_DIR", "")
    need(os.path.isdir(vocab_dir), f"QSHARD_VOCAB_DIR='{vocab_dir}' is not a folder; run "
         "launch/fetch_testdata.sh (launch/setup.sh does) and reconfigure")
    dirs = []
    for name in names:
        if name == "smollm2":
            dirs.append((name, smollm2_dir()))
        else:
            dirs.append((name, check_vocab_converter.tokenizer_dir(vocab_dir, name, scratch)))
    return dirs


def smollm2_dir():
    smol = os.environ.get("QSHARD_SMOLLM2_DIR", "")
    need(os.path.isfile(os.path.join(smol, "tokenizer.json")),
         f"QSHARD_SMOLLM2_DIR='{smol}' has no tokenizer.json; run launch/fetch_testdata.sh "
         "(it builds it with tools/smollm2_to_hf.py)")
    return smol


def default_names():
    names = list(gguf_vocab_to_tokenizer_json.DEFAULT_NAMES)
    # SmolLM2's directory exists once tools/smollm2_to_hf.py does (fetch_testdata.sh).
    if os.path.isfile(os.path.join(ROOT, "tools", "smollm2_to_hf.py")):
        names.append("smollm2")
    else:
        print("note: tools/smollm2_to_hf.py is not in this tree: SmolLM2 not checked")
    return names


def run_qshard(qshard, directory, text_path, out_path):
    """(ids, bos) from qshard tokenize, or (None, error text)."""
    cmd = [qshard, "tokenize", "--model", directory, "--text", text_path, "--out", out_path,
           "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ids = array("i")
    with open(out_path, "rb") as f:
        ids.frombytes(f.read())
    if sys.byteorder != "little":
        ids.byteswap()
    if report["tokens"] != len(ids):
        return None, f"--json says {report['tokens']} tokens, the file holds {len(ids)}"
    return list(ids), report["bos"]


def show(tok, ids, lo, hi):
    pieces = [f"{i}:{tok.id_to_token(i)!r}" for i in ids[lo:hi]]
    return " ".join(pieces) + f"\n        text {tok.decode(ids[lo:hi], skip_special_tokens=False)!r}"


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(name, tok, file_name, got, want):
    at = first_difference(got, want)
    lo, hi = max(0, at - CONTEXT), at + CONTEXT + 1
    print(f"MISMATCH {name} {file_name}: first difference at token {at} "
          f"(qshard {len(got)} tokens, tokenizers {len(want)})")
    print(f"    qshard     [{lo}:{hi}] {show(tok, got, lo, hi)}")
    print(f"    tokenizers [{lo}:{hi}] {show(tok, want, lo, hi)}")


def check_dir(qshard, name, directory, corpus, files, scratch):
    """Number of corpus files on which qshard and tokenizers disagree."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    failures = 0
    for file_name in files:
        path = os.path.join(corpus, file_name)
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        plain = tok.encode(text, add_special_tokens=False).ids
        special = tok.encode(text, add_special_tokens=True).ids
        want_bos = special[0] if len(special) == len(plain) + 1 else None
        got, bos = run_qshard(qshard, directory, path,
                              os.path.join(scratch, f"{name}-{file_name}.tokens"))
        if got is None:
            failures += 1
            print(f"FAILED   {name} {file_name}: qshard tokenize {bos}")
            continue
        want = ([bos] if bos is not None else []) + plain
        if bos != want_bos:
            failures += 1
            print(f"MISMATCH {name} {file_name}: qshard's BOS is {bos}, the tokenizer.json "
                  f"post-processor adds {want_bos}")
        elif got != want:
            failures += 1
            compare(name, tok, file_name, got, want)
    print(f"{name:16s} {len(files) - failures:3d}/{len(files)} corpus files match")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="vocabulary names or smollm2 (default: all)")
    ap.add_argument("--corpus", default=CORPUS, help="folder of texts (default: the corpus)")
    args = ap.parse_args()
    qshard = os.environ.get("QSHARD_BIN", os.path.join(ROOT, "build", "qshard"))
    need(os.access(qshard, os.X_OK), f"QSHARD_BIN='{qshard}' is not an executable; build qshard")
    files = sorted(f for f in os.listdir(args.corpus) if f.endswith(".txt"))
    need(files, f"{args.corpus} holds no *.txt files")
    with tempfile.TemporaryDirectory() as scratch:
        dirs = tokenizer_dirs(args.names or default_names(), scratch)
        failures = sum(check_dir(qshard, name, d, args.corpus, files, scratch) for name, d in dirs)
    if failures:
        print(f"FAILED: {failures} (tokenizer, file) pairs differ")
        return 1
    print(f"all {len(dirs)} tokenizers match on {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
