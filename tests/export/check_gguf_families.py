#!/usr/bin/env python3
"""--export gguf of every family qshard reads, checked with llama.cpp itself: its library
(libllama of launch/build_llama_cpp.sh's cached build) runs qshard's GGUF through
llama_logits.c, built here, on the golden tokens of tests/model/data/golden/rand-{llama3,
mistral,qwen2,qwen3,mixtral,qwen2-moe,qwen3-moe} (tiny random checkpoints made by
transformers, with its logits), and rand-llama2's weights under rope_scaling linear x4
(reference logits from tools/torch_llama.py).

Per family:
1. The unquantized export (rtn q8_0 --skip . --gguf-dense f32: every weight as stored,
   upcast) reproduces transformers' golden logits: max |diff| <= 1e-3 x max |logit|
   (both run in F32, llama.cpp's K/V cache too; measured 2.7e-7 .. 8.5e-7). The file holds
   what llama.cpp's converter writes for the family: general.architecture (llama for
   llama3, mistral and mixtral, qwen2, qwen3, qwen2moe, qwen3moe), llama3's
   rope_freqs.weight (= transformers' factors), linear's rope.scaling.type/factor, qwen2's
   q/k/v biases and no output.weight (tied embeddings), qwen3's q/k norms, the MoE
   families' experts stacked into ffn_*_exps (llama.cpp loads and runs them); tokenizer.ggml.pre
   llama-bpe/qwen2 for a tokenizer.json with Llama 3's/Qwen2's pre-tokenizer (the test
   writes a byte-level tokenizer.json of vocab_size tokens into a copy of the checkpoint,
   its pre_tokenizer from tools/gguf_vocab_to_tokenizer_json.py).
   rtn gguf:Q4_K_M is byte-identical to llama-quantize's Q4_K_M of that F32 file (the
   types llama.cpp picks for the architecture, fallbacks included); MoE: rtn q4_0 equals
   llama-quantize --pure Q4_0 on every tensor qshard quantized, stacked experts included.
2. A quantized export (rtn q4_0 where 32 divides the rows, the rest --skip'ed) run by
   llama.cpp gives the logits llama.cpp gives for the unquantized GGUF of qshard's
   fake-quant export of the same run: max |diff| <= 0.04 x max |logit|, and at most a
   quarter of the quantization's own distance to the golden logits (llama.cpp rounds the
   activations to Q8_0 blocks inside its Q4_0 dot products, which qshard does not:
   measured 0.7e-2 .. 2.3e-2, against 5e-2 .. 3.8e-1 from the golden logits).
3. MoE: the quantized export written by 2 ranks (experts owned by ranks, spooled by their
   owners, stacked by rank 0) is byte-identical to 1 rank's.
4. Refused with one error line, before --out is made (docs/errors.md rows 57, 69): a
   llama.cpp mix of an MoE model (not planned yet), rope_scaling llama3 on qwen2,
   norm_topk_prob false on qwen3_moe, one layer's experts in two types (one --skip'ed),
   --target-bpw on an MoE model, a K type for the experts by --recipe.
Env: QSHARD_BIN, QSHARD_SOURCE_DIR, QSHARD_VOCAB_DIR (its cache holds the llama.cpp build and
source). Exit 0 pass, 1 fail (a missing llama.cpp build fails, naming the script).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import gguf
import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from checklib import MPIRUN, QBIN, attempt, check, run, verdict  # noqa: E402

ROOT = os.environ["QSHARD_SOURCE_DIR"]
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gguf_vocab_to_tokenizer_json as vocab_tool  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "model", "data", "golden")
CACHE = os.path.dirname(os.environ.get("QSHARD_VOCAB_DIR", os.path.expanduser("~/.cache/qshard/llama-vocab-0.3.36")))
BUILD = os.path.join(CACHE, "llama-cpp-build-0.3.36")
SRC = os.path.join(CACHE, "llama-cpp-src", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
LIBS = ["src/libllama.a", "ggml/src/libggml.a", "ggml/src/libggml-cpu.a", "ggml/src/libggml-base.a"]
# family -> (architecture, tokenizer.ggml.pre of the tokenizer.json written for it)
FAMILIES = {"rand-llama3": ("llama", "llama-bpe"), "rand-mistral": ("llama", "gpt-2"),
            "rand-qwen2": ("qwen2", "qwen2"), "rand-qwen3": ("qwen3", "qwen2"),
            "rand-llama2-linear": ("llama", "gpt-2"), "rand-mixtral": ("llama", "gpt-2"),
            "rand-qwen2-moe": ("qwen2moe", "qwen2"), "rand-qwen3-moe": ("qwen3moe", "qwen2")}
# Cases made here: rand-llama2's weights under rope_scaling linear (no golden file has it).
SOURCE = {"rand-llama2-linear": "rand-llama2"}
PATCH = {"rand-llama2-linear": {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}}
F32_TOL, QUANT_TOL, QUANT_RATIO = 1e-3, 0.04, 0.25
QFMT = "q4_0"  # weight error well above llama.cpp's own activation rounding
MIX = "Q4_K_M"  # on these rows (not multiples of 256): Q5_0/Q8_0 fallbacks, F16 where 32 does not divide
CALIB = []  # the family's --calib arguments


def build_runner(t):
    libs = [os.path.join(BUILD, lib) for lib in LIBS]
    if not all(map(os.path.exists, libs)) or not os.path.exists(os.path.join(SRC, "include", "llama.h")):
        return None
    exe = os.path.join(t, "llama_logits")
    subprocess.check_call([os.environ.get("CC", "cc"), "-O1", "-c", "-I", os.path.join(SRC, "include"), "-I",
                           os.path.join(SRC, "ggml", "include"), os.path.join(HERE, "llama_logits.c"), "-o", exe + ".o"])
    subprocess.check_call([os.environ.get("CXX", "c++"), exe + ".o", "-o", exe] + libs + ["-lm", "-lpthread"])
    return exe


def byte_level_tokenizer(vocab_size, pre):
    """vocab_size tokens: GPT-2's 256 byte characters, then fillers; no merges."""
    chars = [chr(c) for c in range(256)]
    visible = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    shift = 0
    for b in range(256):  # GPT-2's bytes_to_unicode
        if b not in visible:
            chars[b] = chr(256 + shift)
            shift += 1
    vocab = {chars[b]: b for b in range(256)}
    vocab.update({f"<x{i}>": i for i in range(256, vocab_size)})
    return {"version": "1.0", "added_tokens": [], "normalizer": None,
            "pre_tokenizer": vocab_tool.BPE_PRE[pre][1],
            "model": {"type": "BPE", "vocab": vocab, "merges": [], "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False},
            "decoder": {"type": "ByteLevel"}}


def model_copy(t, name, pre, config, dest=None):
    """The golden checkpoint with `config` and a tokenizer.json (the export needs one), in
    t/dest (default: t/name)."""
    d = os.path.join(t, dest or name)
    os.makedirs(d)
    shutil.copy(os.path.join(GOLDEN, SOURCE.get(name, name), "model.safetensors"), d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(byte_level_tokenizer(config["vocab_size"], pre), f)
    return d


def golden_case(name):
    """config, tokens and reference logits: the golden files', or for a case made here from
    another's weights, tools/torch_llama.py's (bit-identical to transformers, README.md there)."""
    src = os.path.join(GOLDEN, SOURCE.get(name, name))
    config = json.load(open(os.path.join(src, "config.json")))
    golden = load_file(os.path.join(src, "golden.safetensors"))
    if name in SOURCE:
        import torch
        import torch_llama
        config.update(PATCH[name])
        m = torch_llama.TorchLlama(src, config=config)
        golden["logits"] = m(torch.from_numpy(golden["tokens"].astype(np.int64))).numpy()
    return config, golden


def quantize(model, out, *args):
    run([QBIN, "quantize", "--model", model, "--out", out, "--quiet"] + CALIB + list(args))
    return out


def logits(exe, path, tokens, t):
    tok = os.path.join(t, "tokens.i32")
    tokens.astype(np.int32).tofile(tok)
    out = path + ".logits"
    B, S = tokens.shape
    p = subprocess.run([exe, path, tok, str(B), str(S), out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"llama_logits {path} -> {p.returncode}\n{p.stderr[-3000:]}")
    return np.fromfile(out, dtype=np.float32).reshape(B, S, -1)


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def check_layout(name, path, arch, pre, config):
    r = gguf.GGUFReader(path)
    names = {t.name for t in r.tensors}
    check(field(r, "general.architecture") == arch, f"{name}: general.architecture {arch}")
    check(field(r, "tokenizer.ggml.pre") == pre, f"{name}: tokenizer.ggml.pre {field(r, 'tokenizer.ggml.pre')}")
    scaling = (config.get("rope_scaling") or {}).get("rope_type")
    check(("rope_freqs.weight" in names) == (scaling == "llama3"), f"{name}: rope_freqs.weight iff rope_scaling llama3")
    check(("output.weight" in names) != config.get("tie_word_embeddings", False),
          f"{name}: output.weight iff embeddings are not tied")
    if scaling == "llama3":
        got = next(x for x in r.tensors if x.name == "rope_freqs.weight").data
        want = llama3_factors(config)
        check(got.shape == want.shape and np.allclose(got, want, rtol=1e-6, atol=0),
              f"{name}: rope_freqs.weight [{' '.join(f'{v:.4g}' for v in got)}] = transformers' llama3 factors "
              f"[{' '.join(f'{v:.4g}' for v in want)}]")
    if scaling == "linear":
        check(field(r, f"{arch}.rope.scaling.type") == "linear" and field(r, f"{arch}.rope.scaling.factor")
              == config["rope_scaling"]["factor"], f"{name}: {arch}.rope.scaling.type/factor linear")
    if arch == "qwen2":
        check({f"blk.0.attn_{x}.bias" for x in "qkv"} <= names, f"{name}: q/k/v biases")
    if arch == "qwen3":
        check({"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight"} <= names, f"{name}: q/k norms")


def llama3_factors(config):
    """Per rotary frequency pair, transformers' unscaled over its llama3-scaled frequency
    (modeling_rope_utils), which llama.cpp divides the frequency by."""
    rs, d = config["rope_scaling"], config["hidden_size"] // config["num_attention_heads"]
    inv = 1.0 / config["rope_theta"] ** (np.arange(0, d, 2) / d)
    wavelen = 2 * np.pi / inv
    lo, hi, old = rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    smooth = (old / wavelen - lo) / (hi - lo)
    scaled = np.where(wavelen > old / lo, inv / rs["factor"], inv)
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    scaled = np.where(medium, (1 - smooth) * inv / rs["factor"] + smooth * inv, scaled)
    return (inv / scaled).astype(np.float32)


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def same_as_llama_quantize(name, src, base, t, moe, skip):
    """rtn gguf:MIX equals llama-quantize's MIX of the unquantized export: the mix's types
    (as llama_tensor_get_type picks them for this architecture) and its bytes. MoE (no mix
    planned yet): rtn q4_0 equals `llama-quantize --pure` Q4_0 on the tensors qshard
    quantized, the stacked experts included."""
    fmt = ["q4_0"] + skip if moe else ["gguf:" + MIX]
    ours = os.path.join(quantize(src, os.path.join(t, name + "-mix"), "--method", "rtn", "--format", *fmt,
                                 "--export", "gguf"), "model.gguf")
    theirs = os.path.join(t, name + "-llama-quantize.gguf")
    run([os.path.join(BUILD, "bin", "llama-quantize")] + (["--pure"] if moe else []) +
        [base, theirs, "Q4_0" if moe else MIX, "1"])
    a = {x.name: x for x in gguf.GGUFReader(ours).tensors}
    b = {x.name: x for x in gguf.GGUFReader(theirs).tensors}
    names = [n for n in a if a[n].tensor_type.name == "Q4_0"] if moe else list(b)
    if moe:
        check(any("_exps." in n for n in names), f"{name}: stacked experts among the Q4_0 tensors")
    bad = sorted(n for n in names if n not in a or a[n].tensor_type != b[n].tensor_type or not np.array_equal(a[n].data, b[n].data))
    diff = "; ".join(f"{n} ours {a[n].tensor_type.name if n in a else 'missing'} theirs {b[n].tensor_type.name}"
                     for n in bad[:4])
    what = "q4_0 byte-identical to llama-quantize --pure Q4_0" if moe else f"gguf:{MIX} byte-identical to llama-quantize {MIX}"
    check(not bad and (moe or a.keys() == b.keys()), f"{name}: rtn {what} ({len(names)} tensors"
          + (f"; differ: {diff})" if bad else ")"))


def quantizable_skip(config):
    """--skip for the Linears whose in_features 32 does not divide (q8_0's blocks)."""
    h, i = config["hidden_size"], config.get("moe_intermediate_size", config["intermediate_size"])
    q = config["num_attention_heads"] * config.get("head_dim", h // config["num_attention_heads"])
    skip = [n for n, cols in [("q_proj|k_proj|v_proj|gate_proj|up_proj", h), ("o_proj", q), ("down_proj", i)] if cols % 32]
    return ["--skip", "|".join(skip)] if skip else []


def family(exe, t, name, arch, pre):
    config, golden = golden_case(name)
    # rtn reads no calibration, but quantize asks for it: the golden tokens.
    calib = os.path.join(t, name + ".tokens")
    golden["tokens"].astype(np.int32).tofile(calib)
    B, S = golden["tokens"].shape
    CALIB[:] = ["--calib", calib, "--n-calib", str(B), "--calib-seqlen", str(S)]
    src = model_copy(t, name, pre, config)
    base = quantize(src, os.path.join(t, name + "-f32"), "--method", "rtn", "--format", "q8_0", "--skip", ".",
                    "--export", "gguf", "--gguf-dense", "f32")
    path = os.path.join(base, "model.gguf")
    check_layout(name, path, arch, pre, config)
    same_as_llama_quantize(name, src, path, t, "num_experts" in config or "num_local_experts" in config,
                           quantizable_skip(config))
    e = rel_err(logits(exe, path, golden["tokens"], t), golden["logits"])
    check(e <= F32_TOL, f"{name}: llama.cpp on the F32 export reproduces transformers' logits "
          f"(max |diff| / max |logit| = {e:.2e} <= {F32_TOL})")

    skip = quantizable_skip(config)
    q = quantize(src, os.path.join(t, name + "-q"), "--method", "rtn", "--format", QFMT, *skip, "--export", "gguf")
    fq = quantize(src, os.path.join(t, name + "-fq"), "--method", "rtn", "--format", QFMT, *skip, "--export", "fakequant")
    fq32 = quantize(fq, os.path.join(t, name + "-fq32"), "--method", "rtn", "--format", "q8_0", "--skip", ".",
                    "--export", "gguf", "--gguf-dense", "f32")
    types = {t_.name: t_.tensor_type.name for t_ in gguf.GGUFReader(os.path.join(q, "model.gguf")).tensors}
    n_q = sum(v == QFMT.upper() for v in types.values())
    check(n_q > 0, f"{name}: {n_q} {QFMT.upper()} tensors in the quantized export ({' '.join(skip) or 'nothing skipped'})")
    if "num_experts" in config or "num_local_experts" in config:
        q2 = os.path.join(t, name + "-q-2ranks")
        run(MPIRUN + ["-np", "2", QBIN, "quantize", "--model", src, "--out", q2, "--quiet"] + CALIB +
            ["--method", "rtn", "--format", QFMT, *skip, "--export", "gguf"])
        same = open(os.path.join(q, "model.gguf"), "rb").read() == open(os.path.join(q2, "model.gguf"), "rb").read()
        check(same, f"{name}: the {QFMT} export from 2 ranks is byte-identical to 1 rank's (stacked experts)")
    lq = logits(exe, os.path.join(q, "model.gguf"), golden["tokens"], t)
    lf = logits(exe, os.path.join(fq32, "model.gguf"), golden["tokens"], t)
    e, eg = rel_err(lq, lf), rel_err(lq, golden["logits"])
    check(e <= QUANT_TOL and e <= QUANT_RATIO * eg,
          f"{name}: llama.cpp on the {QFMT} export gives the fake-quant export's logits (max |diff| / max |logit| "
          f"= {e:.2e} <= {QUANT_TOL} and <= {QUANT_RATIO} x the quantization's own {eg:.2e} from the golden logits)")


def refused(t, what, name, patch, args, pattern):
    """docs/errors.md rows 57 and 69: exit 2, one error line (MoE runs may warn before it)."""
    config = json.load(open(os.path.join(GOLDEN, name, "config.json"))) | patch
    src = model_copy(t, name, "gpt-2", config, f"refused-{len(os.listdir(t))}")
    src_golden = load_file(os.path.join(GOLDEN, name, "golden.safetensors"))
    B, S = src_golden["tokens"].shape
    calib = os.path.join(src, "calib.tokens")
    src_golden["tokens"].astype(np.int32).tofile(calib)
    cmd = [QBIN, "quantize", "--model", src, "--out", src + "-out", "--quiet", "--calib", calib, "--n-calib", str(B),
           "--calib-seqlen", str(S), "--method", "rtn", "--export", "gguf"] + (args if "--format" in args else
                                                                                ["--format", "q4_0"] + args)
    p = attempt(cmd)
    errors = [line for line in p.stderr.splitlines() if line.startswith("qshard: error:")]
    check(p.returncode == 2 and len(errors) == 1 and pattern in errors[0],
          f"{what} refused with one error line: {' / '.join(errors) or p.stderr.strip()[-300:]}")
    check(not os.path.exists(src + "-out"), f"{what} refused before --out was made")


def main():
    tmp = tempfile.TemporaryDirectory(prefix="qshard-gguf-families-")
    exe = build_runner(tmp.name)
    if exe is None:
        print(f"FAIL: the llama.cpp build in {BUILD} (libllama.a, its ggml libraries and source) is missing: "
              "run launch/build_llama_cpp.sh (launch/setup.sh calls it)")
        return 1
    for name, (arch, pre) in FAMILIES.items():
        try:
            family(exe, tmp.name, name, arch, pre)
        except RuntimeError as e:
            check(False, f"{name}: {e}")
    refused(tmp.name, "a llama.cpp mix of rand-mixtral", "rand-mixtral", {}, ["--format", "gguf:Q4_K_M"],
            "not planned yet")
    refused(tmp.name, "rope_scaling llama3 on qwen2", "rand-qwen2", PATCH["rand-llama2-linear"] | {"rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 256}}, [], "reads no rope_freqs")
    refused(tmp.name, "norm_topk_prob false on qwen3_moe", "rand-qwen3-moe", {"norm_topk_prob": False}, [],
            "always renormalizes")
    refused(tmp.name, "one layer's experts in two types", "rand-mixtral", {}, ["--skip", r"layers\.0\..*experts\.1\."],
            "one GGUF tensor of one type")
    refused(tmp.name, "--target-bpw on rand-mixtral", "rand-mixtral", {}, ["--target-bpw", "4.5"],
            "a per-module plan does not keep")
    recipe = os.path.join(tmp.name, "experts-q4_k.json")
    json.dump({"rules": [{"match": r".*experts\..*", "format": "q4_k"}]}, open(recipe, "w"))
    refused(tmp.name, "a K type for qwen3-moe's experts by --recipe", "rand-qwen3-moe", {}, ["--recipe", recipe],
            "32-block types only")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
