#!/usr/bin/env python3
"""qshard's tokenizer.json reader against the Hugging Face `tokenizers` package on real
text: the same ids for every line, and single-thread speed of both.
    check_tokenizer_python.py TOKENIZE_SAMPLE TEXT_FILE MODEL_DIR... [--repeats N] [--min-speed R]
TOKENIZE_SAMPLE is tests/io/tokenize_sample; each MODEL_DIR holds a tokenizer.json.
TEXT_FILE "random:N:SEED" is N lines of random text mixing scripts, marks, digits, the
Unicode spaces, apostrophes and invalid UTF-8 (written to a temporary file).
--min-speed R fails when qshard is slower than R times `tokenizers` (default: no check).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402


PIECES = (list("abcXYZ019 '’_-.,!?\t\n") + ["'s", "'T", "'ll", "'RE", " ", "  ", "\r\n", "\u00a0", "\u0085",
          "\u2028", "\u3000", "\u200b", "é", "e\u0301", "ﬁ", "ß", "İ", "Σσς", "Ⅻ", "²", "½", "١٢", "‿", "🦙",
          "👨‍👩‍👧", "中文", "日本語", "한국어", "Привет", "עברית", "ไทย", "हिन्दी", "\U0001d400", "K", "ſ", "<s>",
          "</s>", "<|endoftext|>", "<|im_start|>", "▁", "Ġ", "  \n ", "1234567", "3.14", "\x00", "\x7f"])


def random_text(n, seed):
    rng = random.Random(seed)
    out = b""
    for _ in range(n):
        line = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 30))).replace("\n", " ")
        b = line.encode("utf-8")
        if rng.random() < 0.1:  # invalid UTF-8 somewhere
            k = rng.randint(0, len(b))
            b = b[:k] + rng.choice([b"\xff", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"]) + b[k:]
        out += b + b"\n"
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sample")
    ap.add_argument("text")
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-speed", type=float, default=0.0)
    a = ap.parse_args()
    if a.text.startswith("random:"):
        _, n, seed = a.text.split(":")
        raw = random_text(int(n), int(seed))
        tmp = tempfile.NamedTemporaryFile(suffix=".txt", delete=False)
        tmp.write(raw)
        tmp.close()
        a.text = tmp.name
    else:
        with open(a.text, "rb") as f:
            raw = f.read()
    lines = [l.decode("utf-8", errors="replace") for l in raw.split(b"\n")]
    lines = [l + "\n" for l in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    ok = True
    for d in a.dirs:
        if not os.path.exists(os.path.join(d, "tokenizer.json")):
            print(f"{d}/tokenizer.json is missing: run launch/fetch_testdata.sh")
            return 1
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            want = [tok.encode(l, add_special_tokens=False).ids for l in lines]
        hf_s = time.perf_counter() - t0
        r = subprocess.run([a.sample, d, a.text, str(a.repeats)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{d}: tokenize_sample failed: {r.stderr}")
            return 1
        got = [[int(x) for x in line.split()] for line in r.stdout.split("\n")[:len(lines)]]
        bad = [i for i in range(len(lines)) if got[i] != want[i]]
        n = sum(len(w) for w in want)
        qs = r.stderr.strip().split("\n")[-1]
        qs_rate = float(qs.split(" tokens/s")[0].split(", ")[-1])
        hf_rate = n * a.repeats / hf_s
        print(f"{os.path.basename(d.rstrip('/'))}: {len(lines)} lines, {n} tokens, {len(bad)} differ; "
              f"qshard {qs_rate:,.0f} tokens/s, tokenizers {hf_rate:,.0f} tokens/s ({qs_rate / hf_rate:.2f}x)")
        for i in bad[:5]:
            print(f"  line {i + 1} {lines[i]!r}\n    want {want[i]}\n    got  {got[i]}")
        if bad or qs_rate < a.min_speed * hf_rate:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
