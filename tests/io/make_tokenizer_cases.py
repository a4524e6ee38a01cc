#!/usr/bin/env python3
"""Writes the small tokenizer.json files of tests/io/data/tokenizer/NAME/ (each written out
by hand below, one or two components at a time) and cases.json: the ids the Hugging Face
`tokenizers` package gives for each test text, which test_tokenizer_json.cpp expects from
qshard. Run from the repo root when a case changes:
    .venv/bin/python tests/io/make_tokenizer_cases.py
Texts are stored as hex, so invalid UTF-8 can be tested: `tokenizers` sees those decoded
with errors="replace", which is what qshard documents it does.
"""
import json
import os

from tokenizers import Tokenizer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tokenizer")


def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def bpe(vocab, merges, **kw):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
         "ignore_merges": False, "vocab": vocab, "merges": merges}
    m.update(kw)
    return m


def byte_vocab(words):
    """The 256 byte characters, then the merged words in order."""
    vocab = {B2U[b]: i for i, b in enumerate(range(256))}
    for w in words:
        vocab.setdefault(w, len(vocab))
    return vocab


def prefixes(words):
    """Each word with the prefixes merges_for builds it from, in order."""
    out = []
    for w in words:
        for k in range(2, len(w) + 1):
            if w[:k] not in out:
                out.append(w[:k])
    return out


def merges_for(words):
    """Merges building each word left to right from its characters."""
    merges = []
    for w in words:
        for k in range(2, len(w) + 1):
            m = (w[:k - 1], w[k - 1])
            if m not in merges:
                merges.append(m)
    return merges


def added(content, id, special=True, normalized=None, lstrip=False, rstrip=False, single_word=False):
    return {"id": id, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": (not special) if normalized is None else normalized,
            "special": special}


def tok(model, normalizer=None, pre=None, post=None, added_tokens=()):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added_tokens),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post,
            "decoder": None, "model": model}


def template(bos_name, bos_id):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos_name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos_name: {"id": bos_name, "ids": [bos_id], "tokens": [bos_name]}}}


GPT2_WORDS = prefixes(["he", "ll", "hello", "Ġworld", "'t", "Ġ1", "23", "or"])
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTES = [("<0x%02X>" % b) for b in range(256)]
SPM_WORDS = prefixes(["ll", "▁hello", "▁world", "or"])
CHARS = list("abcdefghijklmnopqrstuvwxyz ") + ["▁", "<unk>"]


def char_vocab(extra_words=()):
    vocab = {c: i for i, c in enumerate(CHARS)}
    for w in extra_words:
        vocab.setdefault(w, len(vocab))
    return vocab


FILES = {
    # GPT-2 style: ByteLevel with its regex, merges as "a b" strings, one special token.
    "byte_level": tok(bpe(byte_vocab(GPT2_WORDS), [" ".join(m) for m in merges_for(GPT2_WORDS)]),
                      pre={"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
                      post={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                      added_tokens=[added("<|endoftext|>", 300)]),
    # ByteLevel adding a prefix space to each piece, after Digits keeping runs together.
    "byte_prefix": tok(bpe(byte_vocab(GPT2_WORDS + ["Ġ12"]), [" ".join(m) for m in merges_for(GPT2_WORDS + ["Ġ12"])]),
                       pre={"type": "Sequence", "pretokenizers": [
                           {"type": "Digits", "individual_digits": False},
                           {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]},
                       added_tokens=[added("<|endoftext|>", 300)]),
    # Llama 3 style: Split regex + ByteLevel without regex, ignore_merges, pair merges, BOS template.
    "llama3": tok(bpe(byte_vocab(GPT2_WORDS + ["Ġhello", "ĠĠ"]), [" ".join(m) for m in merges_for(GPT2_WORDS)],
                      ignore_merges=True),
                  pre={"type": "Sequence", "pretokenizers": [
                      {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
                      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
                  post={"type": "Sequence", "processors": [
                      {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
                      template("<|begin_of_text|>", 301)]},
                  added_tokens=[added("<|begin_of_text|>", 301), added("<|end_of_text|>", 302)]),
    # Llama 2 fast tokenizer: Prepend + Replace normalizer, byte_fallback, fused unk.
    "spm": tok(bpe({**{"<unk>": 0, "<s>": 1, "</s>": 2}, **{b: 3 + i for i, b in enumerate(BYTES)},
                    **{c: 259 + i for i, c in enumerate("▁helowrd")},
                    **{w: 267 + i for i, w in enumerate(SPM_WORDS)}},
                   [" ".join(m) for m in merges_for(SPM_WORDS)], unk_token="<unk>", fuse_unk=True,
                   byte_fallback=True),
               normalizer={"type": "Sequence", "normalizers": [
                   {"type": "Prepend", "prepend": "▁"},
                   {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
               post=template("<s>", 1),
               added_tokens=[added("<unk>", 0), added("<s>", 1), added("</s>", 2)]),
    # Metaspace (prepend_scheme first) with unk but no byte fallback, unfused unk.
    "metaspace": tok(bpe(char_vocab(["▁h", "▁he", "ab"]), ["▁ h", "▁h e", "a b"], unk_token="<unk>"),
                     pre={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
                     added_tokens=[added("<sep>", 40)]),
    # Normalizers and word-level pre-tokenizers, with a subword prefix and word suffix.
    "normalize": tok(bpe(char_vocab(["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
                                    + [c + "</w>" for c in "abcdefghijklmnopqrstuvwxyz"]
                                    + ["##b</w>", "ab</w>", "0", "1", "2", "3", "fi", "##o", "##o</w>", "##f", "fio</w>"]),
                         [("a ##b</w>"), ("f ##i"), ("fi ##o</w>")],
                         unk_token="<unk>", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
                     normalizer={"type": "Sequence", "normalizers": [
                         {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True},
                         {"type": "Replace", "pattern": {"Regex": "[0-9]+"}, "content": "0123"}]},
                     pre={"type": "Sequence", "pretokenizers": [
                         {"type": "WhitespaceSplit"}, {"type": "Digits", "individual_digits": True}]}),
    # Added tokens: lstrip/rstrip/single_word, and a normalized (non-special) token.
    "added": tok(bpe(char_vocab(["ab", "abc"]), ["a b", "ab c"], unk_token="<unk>"),
                 normalizer={"type": "Lowercase"},
                 added_tokens=[added("<L>", 40, lstrip=True), added("<R>", 41, rstrip=True),
                               added("<LR>", 42, lstrip=True, rstrip=True),
                               added("word", 43, special=False, single_word=True),
                               added("Abc", 44, special=False, normalized=False),
                               added("xyz", 45, special=False), added("<L><R>", 46),
                               added("QQ", 47, special=False)]),
    # NFC/NFD and Whitespace pre-tokenizer (\w+|[^\w\s]+).
    "nfd": tok(bpe(char_vocab(["\u0301", "e\u0301", "é", "!", "?", "!?"]), ["e \u0301", "! ?"], unk_token="<unk>"),
               normalizer={"type": "NFD"}, pre={"type": "Whitespace"}),
}

# Split with each behavior (and invert), on a vocab where merges cross the split points.
for behavior in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
    for invert in [False, True]:
        FILES["split_%s%s" % (behavior.lower(), "_invert" if invert else "")] = tok(
            bpe(char_vocab(["-", "a-", "-b", "a-b", "ab", "--", "a--"]), ["a -", "- b", "a- b", "a b", "- -", "a- -"],
                unk_token="<unk>"),
            pre={"type": "Split", "pattern": {"String": "-"}, "behavior": behavior, "invert": invert})

PAIR_MERGES = {"llama3"}

TEXTS = {
    "byte_level": ["hello world", "Hello World!", "hello<|endoftext|> world", "don't 123 \t\n  x",
                   "héllo 🦙", b"bad \xff\xfe utf8 \xe2\x82 end", b"\xf0\x9f\xa6", "", "   ", "a  \n\n b"],
    "byte_prefix": ["hello", " hello", "<|endoftext|>hello", "x123y 45", "12", ""],
    "llama3": ["hello world", " hello", "  hello", "HELLO's 12345", "<|begin_of_text|>hello<|end_of_text|>",
               "x\r\n\r\ny", "I'M", "hello  world"],
    "spm": ["hello world", " hello", "hello  world", "héllo", "<s>hello</s>", "🦙x", "\n"],
    "metaspace": ["he he", "hex <sep>he", "<sep>he", "ab!!ab", " he"],
    "normalize": ["  Hello  WORLD  ", "ﬁo ab", "x42 9", "ABB", "foo fio", "İX ΑΣ ǅ"],
    "added": ["ab <L> abc", "abc <R>  abc", "a <LR>  b", "a word b", "swordfish", "word", "abc Abc xYz",
              "<L><R>", "  <L>", "a_word", "a QQ b qq", "wordé word\u0301 word_ ²word"],
    "nfd": ["café!?", "cafe\u0301", "a, b... é"],
}
for name in FILES:
    if name.startswith("split_"):
        TEXTS[name] = ["a-b", "a--b", "-a-", "ab", "--"]


def main():
    cases = []
    for name, j in FILES.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        # `tokenizers` gives an added token not in the model vocab the next free id, whatever
        # the file says; real files agree with it, so these must too.
        t = Tokenizer.from_str(json.dumps(j))
        for a in j["added_tokens"]:
            a["id"] = t.token_to_id(a["content"])
        for pp in [j["post_processor"]] + (j["post_processor"] or {}).get("processors", []):
            for content, sp in (pp or {}).get("special_tokens", {}).items():
                sp["ids"] = [t.token_to_id(content)]
        text = json.dumps(j, ensure_ascii=False, indent=1)
        written = text
        if name in PAIR_MERGES:  # tokenizers >= 0.20's spelling; this 0.19 reads only "a b"
            j2 = json.loads(text)
            j2["model"]["merges"] = [m.split(" ") for m in j2["model"]["merges"]]
            written = json.dumps(j2, ensure_ascii=False, indent=1)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(written + "\n")
        try:
            t = Tokenizer.from_str(text)
        except Exception as e:
            raise SystemExit(f"{name}: {e}")
        for s in TEXTS[name]:
            raw = s if isinstance(s, bytes) else s.encode("utf-8")
            ids = t.encode(raw.decode("utf-8", errors="replace"), add_special_tokens=False).ids
            cases.append({"dir": name, "hex": raw.hex(), "text": raw.decode("utf-8", "replace"), "ids": ids})
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"{len(FILES)} tokenizers, {len(cases)} cases in {OUT}")


if __name__ == "__main__":
    main()
