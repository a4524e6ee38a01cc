#!/usr/bin/env python3
"""Token files end to end on the tiny model: `qshard tokenize` writes [BOS] + encode(text)
as little-endian int32 (the ids sentencepiece gives in Python), `eval --tokens` on it gives
exactly the numbers of `eval --text` on the text (at 1 and 2 ranks), and `quantize --calib`
on it writes the same bytes as on the text.
Env: QSHARD_BIN, QSHARD_TEST_MODEL. Exit 0 pass, 1 fail.
"""
import hashlib
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, MPIRUN, check, last_json, run, verdict  # noqa: E402
TEXT = os.path.join(MODEL, "text", "eval.txt")
CALIB = os.path.join(MODEL, "text", "calib.txt")


def tokenize(text, out):
    stdout = run([QBIN, "tokenize", "--model", MODEL, "--text", text, "--out", out, "--json", "--quiet"])
    return stdout, last_json(stdout)


def read_ids(path):
    raw = open(path, "rb").read()
    return list(struct.unpack(f"<{len(raw) // 4}i", raw))


def check_tokenize(t):
    out = os.path.join(t, "eval.tokens")
    stdout, j = tokenize(TEXT, out)
    check(set(j) == {"tokens", "seconds", "tokens_per_s", "bos", "tokenizer"}, f"--json keys {sorted(j)}")
    check(len(stdout.strip().splitlines()) == 2 and "tokens/s" in stdout, f"one summary line: {stdout.splitlines()[0]}")
    ids = read_ids(out)
    check(os.path.getsize(out) == 4 * j["tokens"] and len(ids) == j["tokens"], f"{j['tokens']} tokens in the file")
    check(j["bos"] == 1 and ids[0] == 1, f"BOS {j['bos']} first")
    check(j["seconds"] >= 0 and j["tokens_per_s"] >= 0 and "sentencepiece" in j["tokenizer"], f"{j['tokenizer']}")
    check(not [n for n in os.listdir(t) if n.startswith(".")], "no temporary file left")
    try:
        import sentencepiece
    except ImportError:
        print("skip: sentencepiece (Python) not installed; the ids are not compared")
    else:
        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
        want = [sp.bos_id()] + sp.encode(open(TEXT, encoding="utf-8").read())
        check(ids == want, f"ids equal Python sentencepiece's ([BOS] + encode), {len(want)} tokens")
    return out


def check_eval(t, tokens):
    args = ["--seqlen", "128", "--max-windows", "24", "--json", "--quiet"]
    by_text = last_json(run([QBIN, "eval", "--model", MODEL, "--text", TEXT] + args))
    by_tokens = last_json(run([QBIN, "eval", "--model", MODEL, "--tokens", tokens] + args))
    for k in ("ppl", "nll_mean", "tokens", "windows"):
        check(by_text[k] == by_tokens[k], f"eval --tokens {k} {by_tokens[k]} == eval --text {by_text[k]}")
    if shutil.which("mpirun"):
        two = last_json(run(MPIRUN + ["-np", "2", QBIN, "eval", "--model", MODEL, "--tokens", tokens] + args))
        check(two["ppl"] == by_text["ppl"] and two["ranks"] == 2, f"2 ranks: ppl {two['ppl']}")
    else:
        print("skip: mpirun not found; eval --tokens at 2 ranks not run")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def check_calibration(t):
    tokens = os.path.join(t, "calib.tokens")
    tokenize(CALIB, tokens)
    outs = {}
    for name, calib in (("text", CALIB), ("tokens", tokens)):
        outs[name] = os.path.join(t, "out-" + name)
        run([QBIN, "quantize", "--model", MODEL, "--out", outs[name], "--calib", calib, "--n-calib", "4",
             "--calib-seqlen", "64", "--method", "gptq", "--export", "fakequant", "--quiet"])
    a, b = (os.path.join(outs[n], "model.safetensors") for n in ("text", "tokens"))
    check(sha(a) == sha(b), "quantize --calib FILE.tokens writes the bytes --calib FILE.txt does")


def main():
    with tempfile.TemporaryDirectory(prefix="qshard-tokens-") as t:
        tokens = check_tokenize(t)
        check_eval(t, tokens)
        check_calibration(t)
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
