#!/usr/bin/env python3
"""Checks tools/gguf_vocab_to_tokenizer_json.py against llama.cpp's tokenizer test vectors.

For each vocabulary NAME, QSHARD_VOCAB_DIR/ggml-vocab-NAME.gguf.inp holds test texts separated
by "\\n__ggml_vocab_test__\\n" and .out one line of ids per text, made by Hugging Face's
AutoTokenizer(original model).encode(text, add_special_tokens=False): no BOS. The converted
tokenizer.json (QSHARD_VOCAB_DIR/tokenizer-json/NAME when its .stamp says this version of the
tool made it, else converted here into a temporary folder) loaded by the `tokenizers` package must give the same ids, and with BOS prepended when
its tokenizer_config.json says add_bos_token.

Usage: QSHARD_VOCAB_DIR=... .venv/bin/python tests/io/check_vocab_converter.py [NAME...]
Exit 0 when every vector matches; 1 with the first mismatches printed.
"""
import hashlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

SEP = "\n__ggml_vocab_test__\n"


def read_vectors(base):
    with open(base + ".inp", encoding="utf-8") as f:
        texts = f.read().split(SEP)
    if texts and texts[-1] == "":
        texts.pop()  # the file ends with a separator
    with open(base + ".out", encoding="utf-8") as f:
        outs = [[int(t) for t in line.split()] for line in f.read().split("\n")[:len(texts)]]
    if len(outs) != len(texts):
        sys.exit(f"check_vocab_converter: {base}.inp has {len(texts)} tests, .out {len(outs)}")
    return list(zip(texts, outs))


def tool_stamp():
    """What launch/fetch_testdata.sh writes into tokenizer-json/.stamp."""
    with open(os.path.join(ROOT, "tools", "gguf_vocab_to_tokenizer_json.py"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def tokenizer_dir(vocab_dir, name, scratch):
    """The conversion fetch_testdata.sh made, if this version of the tool made it."""
    made = os.path.join(vocab_dir, "tokenizer-json")
    try:
        with open(os.path.join(made, ".stamp"), encoding="utf-8") as f:
            if f.read().strip() == tool_stamp() and \
                    os.path.isfile(os.path.join(made, name, "tokenizer.json")):
                return os.path.join(made, name)
    except OSError:
        pass
    import gguf
    import gguf_vocab_to_tokenizer_json as conv
    out = os.path.join(scratch, name)
    conv.write_files(conv.tokenizer_files(gguf.GGUFReader(
        os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf"))), out)
    return out


def check(vocab_dir, name, scratch):
    from tokenizers import Tokenizer
    base = os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf")
    for path in (base, base + ".inp", base + ".out"):
        if not os.path.isfile(path):
            sys.exit(f"check_vocab_converter: {path} is missing; run launch/fetch_testdata.sh")
    directory = tokenizer_dir(vocab_dir, name, scratch)
    tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    vectors = read_vectors(base)
    bad = 0
    for text, want in vectors:
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            bad += 1
            if bad <= 3:
                print(f"  {name}: {text!r}\n    want {want}\n    got  {got}")
    # `tokenizers` renumbers added tokens it cannot find in the model vocabulary.
    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        added = json.load(f)["added_tokens"]
    moved = [(t["content"], t["id"], tok.token_to_id(t["content"])) for t in added
             if tok.token_to_id(t["content"]) != t["id"]]
    if moved:
        bad += 1
        print(f"  {name}: added tokens renumbered (content, id, loaded id): {moved[:5]}")
    # The post-processor must add exactly the BOS that tokenizer_config.json announces.
    with_special = tok.encode("Hello world", add_special_tokens=True).ids
    plain = tok.encode("Hello world", add_special_tokens=False).ids
    bos = tok.token_to_id(config["bos_token"]) if config.get("add_bos_token") else None
    want_special = ([bos] if bos is not None else []) + plain
    if with_special != want_special:
        bad += 1
        print(f"  {name}: add_special_tokens=True gives {with_special}, want {want_special}")
    print(f"{name:16s} {len(vectors) - min(bad, len(vectors)):4d}/{len(vectors)} vectors match"
          f"  (add_bos_token={config.get('add_bos_token')})")
    return bad == 0


def main():
    import gguf_vocab_to_tokenizer_json as conv
    vocab_dir = os.environ.get("QSHARD_VOCAB_DIR", "")
    if not os.path.isdir(vocab_dir):
        sys.exit(f"check_vocab_converter: QSHARD_VOCAB_DIR='{vocab_dir}' is not a folder; "
                 "run launch/fetch_testdata.sh (launch/setup.sh does) and reconfigure")
    # mpt and refact: other `pre` values the tool knows, with vectors to prove it.
    names = sys.argv[1:] or conv.DEFAULT_NAMES + ["mpt", "refact"]
    with tempfile.TemporaryDirectory() as scratch:
        results = [check(vocab_dir, name, scratch) for name in names]
    failed = [n for n, ok in zip(names, results) if not ok]
    if failed:
        print("FAILED:", " ".join(failed))
        return 1
    print("all vocabularies match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
