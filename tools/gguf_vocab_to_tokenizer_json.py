#!/usr/bin/env python3
"""Rebuild a Hugging Face tokenizer.json + tokenizer_config.json from a llama.cpp GGUF vocabulary.

A GGUF file carries the tokenizer as tokenizer.ggml.* keys (model gpt2/llama, pre, tokens,
token_type, merges or scores, bos/eos/unk/pad ids, add_bos_token, chat_template). This tool
writes the tokenizer.json the original model shipped, as far as the GGUF determines it: the
pre-tokenizer regexes per `pre` are the original tokenizer.json ones that llama.cpp's
src/llama-vocab.cpp adapts, and an SPM ("llama") vocabulary becomes a byte-fallback BPE whose
merges are derived from the piece scores the way transformers' LlamaConverter does.

Library (other tools import it):
    tokenizer_files(reader: gguf.GGUFReader) -> {"tokenizer.json": {...},
                                                  "tokenizer_config.json": {...}}
CLI (repo root):
    .venv/bin/python tools/gguf_vocab_to_tokenizer_json.py --vocab-dir DIR --out OUTDIR [NAME...]
converts DIR/ggml-vocab-NAME.gguf into OUTDIR/NAME/{tokenizer.json,tokenizer_config.json}
for each NAME (default: the vocabularies listed in DEFAULT_NAMES), and
    .venv/bin/python tools/gguf_vocab_to_tokenizer_json.py --gguf FILE --out OUTDIR
converts one GGUF file into OUTDIR. Needs the `gguf` package.
"""
import argparse
import json
import os
import sys

import gguf

DEFAULT_NAMES = ["llama-bpe", "qwen2", "qwen35", "gpt-2", "deepseek-llm", "deepseek-coder",
                 "starcoder", "command-r", "phi-3", "llama-spm"]

# llama_token_type in llama.cpp (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The original (Oniguruma) regexes; llama.cpp rewrites (?i:...) for its own engine.
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
             r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
             r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# deepseek-llm's letter class, as code points: the copy in llama-vocab.cpp went through NFC
# somewhere, which turned U+1F7D, U+1FD3, U+1FDB, U+1FBE, U+2126 and U+212A into other
# letters (and three ranges into empty ones, which Oniguruma refuses).
DEEPSEEK_LLM_LETTERS = """
41-5A 61-7A B5 C0-D6 D8-F6 F8-1BA 1BC-1BF 1C4-293 295-2AF 370-373 376 377 37B-37D 37F 386
388-38A 38C 38E-3A1 3A3-3F5 3F7-481 48A-52F 531-556 10A0-10C5 13A0-13F5 13F8-13FD
1C90-1CBA 1CBD-1CBF 1D00-1D2B 1D6B-1D77 1D79-1D9A 1E00-1F15 1F18-1F1D 1F20-1F45 1F48-1F4D
1F50-1F57 1F59 1F5B 1F5D 1F5F-1F7D 1F80-1FB4 1FB6-1FBC 1FBE 1FC2-1FC4 1FC6-1FCC 1FD0-1FD3
1FD6-1FDB 1FE0-1FEC 1FF2-1FF4 1FF6-1FFC 2102 2107 210A-2113 2115 2119-211D 2124 2126 2128
212A-212D 212F-2134 2139 213C-213F 2145-2149 214E 2183 2184 2C00-2C7B 2C7E-2CE4 2CEB-2CEE
2CF2 2CF3 A640-A66D A680-A69B A722-A76F A771-A787 A78B-A78E AB70-ABBF FB00-FB06 FB13-FB17
FF21-FF3A FF41-FF5A 10400-1044F 104B0-104D3 104D8-104FB 10C80-10CB2 10CC0-10CF2
118A0-118DF 1E900-1E943"""


def char_class(ranges):
    return "[" + "".join("-".join(chr(int(x, 16)) for x in r.split("-"))
                         for r in ranges.split()) + "]"


DEEPSEEK_LLM_RES = [
    "[\r\n]",
    "\\s?" + char_class(DEEPSEEK_LLM_LETTERS) + "+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
]
DEEPSEEK_CODER_RES = ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", DEEPSEEK_LLM_RES[4]]


def split(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


def byte_level(use_regex, trim_offsets=True, add_prefix_space=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
            "trim_offsets": trim_offsets, "use_regex": use_regex}


def digits(individual):
    return {"type": "Digits", "individual_digits": individual}


def seq_pre(*items):
    return {"type": "Sequence", "pretokenizers": list(items)}


NFC = {"type": "NFC"}

# pre -> (normalizer, pre_tokenizer, BPE ignore_merges, llama.cpp's add_bos default,
#         clean_up_tokenization_spaces), mirroring each original tokenizer.json.
BPE_PRE = {
    "llama-bpe": (None, seq_pre(split(LLAMA3_RE), byte_level(False)), True, True, True),
    "qwen2": (NFC, seq_pre(split(QWEN2_RE), byte_level(False, trim_offsets=False)),
              False, False, False),
    "qwen35": (None, seq_pre(split(QWEN35_RE), byte_level(False, trim_offsets=False)),
               False, False, False),
    "gpt-2": (None, byte_level(True), False, False, True),
    "mpt": (NFC, byte_level(True), False, False, True),
    "deepseek-llm": (None, seq_pre(*map(split, DEEPSEEK_LLM_RES), digits(False),
                                   byte_level(False)), False, False, False),
    "deepseek-coder": (None, seq_pre(*map(split, DEEPSEEK_CODER_RES), digits(True),
                                     byte_level(False)), False, False, False),
    "starcoder": (None, seq_pre(digits(True), byte_level(True)), False, False, True),
    "command-r": (NFC, seq_pre(digits(True), byte_level(True)), False, False, False),
}
BPE_PRE["llama3"] = BPE_PRE["llama-v3"] = BPE_PRE["llama-bpe"]
BPE_PRE["refact"] = BPE_PRE["starcoder"]
BPE_PRE["smollm"] = BPE_PRE["starcoder"][:4] + (False,)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def is_filler(token, index, ttype):
    """llama.cpp's converters pad the vocabulary to the embedding size with [PAD<id>]."""
    return ttype in (UNKNOWN, USER_DEFINED, UNUSED) and token == f"[PAD{index}]"


def model_vocab(tokens, types):
    """Every token but the fillers: `tokenizers` keeps an added token's id only when the model
    vocabulary has it (else it numbers added tokens on from the vocabulary's size)."""
    vocab = {}
    for i, (t, k) in enumerate(zip(tokens, types)):
        if is_filler(t, i, k):
            continue
        if t in vocab:
            raise ValueError(f"token {i} {t!r} repeats token {vocab[t]}")
        vocab[t] = i
    return vocab


def added_token(index, content, special):
    # llama.cpp matches CONTROL/USER_DEFINED text verbatim, hence normalized: false.
    return {"id": index, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def template(bos):
    """The post-processor that prepends BOS, as LlamaTokenizerFast builds it."""
    if bos is None:
        return None
    single = [{"SpecialToken": {"id": bos[1], "type_id": 0}},
              {"Sequence": {"id": "A", "type_id": 0}}]
    pair = single + [{"SpecialToken": {"id": bos[1], "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {bos[1]: {"id": bos[1], "ids": [bos[0]], "tokens": [bos[1]]}}}


def bpe_model(vocab, merges, ignore_merges, unk=None, byte_fallback=False):
    return {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": byte_fallback,
            "byte_fallback": byte_fallback, "ignore_merges": ignore_merges,
            "vocab": vocab, "merges": merges}


def gpt2_tokenizer(reader, tokens, types, bos):
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre not in BPE_PRE:
        raise ValueError(f"tokenizer.ggml.pre '{pre}' is not supported; "
                         f"add its original pre-tokenizer to BPE_PRE (known: {', '.join(sorted(BPE_PRE))})")
    normalizer, pre_tokenizer, ignore_merges, _, _ = BPE_PRE[pre]
    vocab = model_vocab(tokens, types)
    merges = list(field(reader, "tokenizer.ggml.merges", []))
    post = byte_level(True, trim_offsets=False, add_prefix_space=True)
    if bos is not None:
        post = {"type": "Sequence", "processors": [post, template(bos)]}
    return {"normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post,
            "decoder": byte_level(True, add_prefix_space=True),
            "model": bpe_model(vocab, merges, ignore_merges)}


def spm_merges(vocab, scores):
    """Merges of an SPM-BPE vocabulary as transformers' SentencePieceExtractor derives them:
    every split of a piece into two pieces, ranked by the merged piece's score."""
    merges = []
    for piece, index in vocab.items():
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend((scores[index], m) for m in local)
    merges.sort(key=lambda m: -m[0])  # stable: ties keep vocabulary order
    return [f"{a} {b}" for _, (a, b) in merges]


def llama_tokenizer(reader, tokens, types, bos):
    scores = field(reader, "tokenizer.ggml.scores")
    unk_id = field(reader, "tokenizer.ggml.unknown_token_id", 0)
    vocab = model_vocab(tokens, types)
    # Only normal pieces merge: sentencepiece never builds control, byte or user pieces.
    normal = {t: i for t, i in vocab.items() if types[i] == NORMAL}
    normalizers = [{"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]
    if field(reader, "tokenizer.ggml.add_space_prefix", True):
        normalizers.insert(0, {"type": "Prepend", "prepend": "\u2581"})
    decoders = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if field(reader, "tokenizer.ggml.add_space_prefix", True):
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {"normalizer": {"type": "Sequence", "normalizers": normalizers},
            "pre_tokenizer": None, "post_processor": template(bos),
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": bpe_model(vocab, spm_merges(normal, scores), False,
                               unk=tokens[unk_id], byte_fallback=True)}


def special_name(reader, tokens, key):
    index = field(reader, f"tokenizer.ggml.{key}_token_id")
    return None if index is None or index >= len(tokens) else tokens[index]


def tokenizer_files(reader):
    """{"tokenizer.json": ..., "tokenizer_config.json": ...} for the GGUF behind `reader`.
    Raises ValueError for a vocabulary this tool cannot rebuild faithfully."""
    model = field(reader, "tokenizer.ggml.model")
    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    types = list(field(reader, "tokenizer.ggml.token_type", [NORMAL] * len(tokens)))
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if model == "gpt2":
        default_bos = BPE_PRE.get(pre, (None,) * 5)[3]
    elif model == "llama":
        default_bos = True
    else:
        raise ValueError(f"tokenizer.ggml.model '{model}' is not "
                         "supported (only gpt2 and llama)")
    add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", default_bos))
    bos_id = field(reader, "tokenizer.ggml.bos_token_id")
    bos = (bos_id, tokens[bos_id]) if add_bos and bos_id is not None else None
    build = gpt2_tokenizer if model == "gpt2" else llama_tokenizer
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [added_token(i, t, k != USER_DEFINED)
                            for i, (t, k) in enumerate(zip(tokens, types))
                            if k in (UNKNOWN, CONTROL, USER_DEFINED) and not is_filler(t, i, k)]}
    tok.update(build(reader, tokens, types, bos))
    tok = {k: tok[k] for k in ("version", "truncation", "padding", "added_tokens", "normalizer",
                               "pre_tokenizer", "model", "post_processor", "decoder")}
    clean = BPE_PRE[pre][4] if model == "gpt2" else False
    config = {
        "add_bos_token": add_bos,
        "add_eos_token": bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        "bos_token": special_name(reader, tokens, "bos"),
        "eos_token": special_name(reader, tokens, "eos"),
        "unk_token": special_name(reader, tokens, "unknown"),
        "pad_token": special_name(reader, tokens, "padding"),
        "clean_up_tokenization_spaces": clean,
        "tokenizer_class": "LlamaTokenizerFast" if model == "llama" else "PreTrainedTokenizerFast",
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"}
                                 for t in tok["added_tokens"]},
    }
    arch = field(reader, "general.architecture")
    context = field(reader, f"{arch}.context_length")
    if context is not None:
        config["model_max_length"] = int(context)
    if model == "llama":
        config["legacy"] = True  # what the Prepend/Replace normalizer implements
    template_text = field(reader, "tokenizer.chat_template")
    if template_text is not None:
        config["chat_template"] = template_text
    return {"tokenizer.json": tok, "tokenizer_config.json": config}


def write_files(files, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, obj in files.items():
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1 if name != "tokenizer.json" else None)
            f.write("\n")


def convert(path, out_dir):
    try:
        files = tokenizer_files(gguf.GGUFReader(path))
    except ValueError as e:
        sys.exit(f"gguf_vocab_to_tokenizer_json: {path}: {e}")
    write_files(files, out_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab-dir", help="folder with llama.cpp's ggml-vocab-NAME.gguf files")
    ap.add_argument("--gguf", help="convert this one GGUF file into --out")
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="*", help=f"vocabularies (default: {' '.join(DEFAULT_NAMES)})")
    args = ap.parse_args()
    if args.gguf:
        convert(args.gguf, args.out)
        return
    if not args.vocab_dir:
        ap.error("give --vocab-dir (see launch/fetch_testdata.sh) or --gguf")
    for name in args.names or DEFAULT_NAMES:
        path = os.path.join(args.vocab_dir, f"ggml-vocab-{name}.gguf")
        if not os.path.isfile(path):
            sys.exit(f"gguf_vocab_to_tokenizer_json: {path} is missing; "
                     "run launch/fetch_testdata.sh")
        convert(path, os.path.join(args.out, name))


if __name__ == "__main__":
    main()
