#!/usr/bin/env python3
"""--export gguf read by the `gguf` package (gguf-py, llama.cpp's own reader), tiny model.

For each llama.cpp block type (q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k,
iq4_nl, iq4_xs) with rtn, q4_0, q4_1, q8_0, q2_k, q3_k, q4_k, q6_k, iq4_nl, iq4_xs with gptq:
quantize once into --export gguf and once into --export fakequant; every tensor that
GGUFReader dequantizes (gguf.quants.dequantize), with llama.cpp's q/k row permutation
undone, equals the fake-quant checkpoint's tensor bit for bit (the fake-quant export
stores the model's BF16, so the GGUF's F32 values are rounded to BF16 the same way,
round-to-nearest-even, before comparing). Also: the metadata llama.cpp needs is there
(architecture, hyperparameters, a sentencepiece vocabulary of vocab_size tokens), the
quantized tensors carry the requested type, and a format the GGUF file cannot hold, an
unknown mix, a K-quant with smoothquant and a bad --gguf-dense are refused with exit code 2.
Env: QSHARD_BIN, QSHARD_TEST_MODEL, QSHARD_PYTHON. Exit 0 pass, 1 fail.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

try:
    import gguf
    from gguf import quants
except ImportError:
    print("FAIL: the gguf package is missing from the test venv; run launch/fetch_testdata.sh")
    sys.exit(1)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import MODEL, QBIN, check, verdict  # noqa: E402
CALIB = ["--calib", os.path.join(MODEL, "text", "calib.txt"), "--n-calib", "4", "--calib-seqlen", "64"]


def quantize(out, *args):
    cmd = [QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + list(args)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf's LlamaModel.permute on the rows of w."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16_bits(a):
    return torch.from_numpy(np.array(a, dtype=np.float32)).to(torch.bfloat16).view(torch.int16).numpy()


def bits_of(t):
    """A fake-quant tensor's raw bits as BF16 (F32 tensors rounded to BF16 first)."""
    if t.dtype != torch.bfloat16:
        t = t.float().to(torch.bfloat16)
    return t.contiguous().view(torch.int16).numpy()


def hf_name(g):
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if g in top:
        return top[g]
    layer = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    _, n, part, suffix = g.split(".")
    return f"model.layers.{n}.{layer[part]}.{suffix}"


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return bytes(v).decode() if f.types[0] == gguf.GGUFValueType.STRING else v[0]


def compare(tag, gguf_path, fq_dir, want_type, config):
    reader = gguf.GGUFReader(gguf_path)
    fq = load_file(os.path.join(fq_dir, "model.safetensors"))
    check(field(reader, "general.architecture") == "llama", f"{tag}: general.architecture llama")
    check(field(reader, "llama.block_count") == config["num_hidden_layers"], f"{tag}: llama.block_count")
    check(field(reader, "llama.attention.head_count_kv") == config["num_key_value_heads"], f"{tag}: head_count_kv")
    check(field(reader, "tokenizer.ggml.model") == "llama", f"{tag}: sentencepiece vocabulary (tokenizer.ggml.model llama)")
    check(len(reader.fields["tokenizer.ggml.tokens"].data) == config["vocab_size"], f"{tag}: vocab_size tokens")
    names = set()
    bad = []
    for t in reader.tensors:
        name = hf_name(t.name)
        names.add(name)
        w = quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if ".attn_q." in t.name:
            w = unpermute(w, config["num_attention_heads"])
        elif ".attn_k." in t.name:
            w = unpermute(w, config["num_key_value_heads"])
        ref = fq[name]
        quantized = t.name.startswith("blk.") and t.name.endswith(".weight") and "norm" not in t.name
        if quantized and t.tensor_type != want_type:
            bad.append(f"{t.name} is {t.tensor_type.name}, want {want_type.name}")
        same = tuple(w.shape) == tuple(ref.shape) and np.array_equal(to_bf16_bits(w), bits_of(ref))
        if not same:
            bad.append(f"{t.name} differs from the fake-quant {name}")
    check(not bad, f"{tag}: {len(reader.tensors)} tensors equal the fake-quant export bit for bit"
          + ("" if not bad else f" ({'; '.join(bad[:4])})"))
    check(names == set(fq.keys()), f"{tag}: the same tensor set as the fake-quant export")


def main():
    config = json.load(open(os.path.join(MODEL, "config.json")))
    tmp = tempfile.TemporaryDirectory(prefix="qshard-gguf-")
    types = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0,
             "q4_1": gguf.GGMLQuantizationType.Q4_1, "q5_0": gguf.GGMLQuantizationType.Q5_0,
             "q5_1": gguf.GGMLQuantizationType.Q5_1, "q2_k": gguf.GGMLQuantizationType.Q2_K,
             "q3_k": gguf.GGMLQuantizationType.Q3_K, "q4_k": gguf.GGMLQuantizationType.Q4_K,
             "q5_k": gguf.GGMLQuantizationType.Q5_K, "q6_k": gguf.GGMLQuantizationType.Q6_K,
             "iq4_nl": gguf.GGMLQuantizationType.IQ4_NL, "iq4_xs": gguf.GGMLQuantizationType.IQ4_XS}
    only = os.environ.get("QSHARD_GGUF_ONLY", "").split(",")  # by hand: just these formats
    runs = [(f, "rtn") for f in types] + [(f, "gptq") for f in ("q4_0", "q4_1", "q8_0", "q2_k", "q3_k", "q4_k",
                                                               "q6_k", "iq4_nl", "iq4_xs")]
    runs = [r for r in runs if only == [""] or r[0] in only]
    for fmt, method in runs:
        tag = f"{method} {fmt}"
        out_g, out_f = (os.path.join(tmp.name, f"{method}-{fmt}-{k}") for k in ("gguf", "fq"))
        pg = quantize(out_g, "--method", method, "--format", fmt, "--export", "gguf")
        pf = quantize(out_f, "--method", method, "--format", fmt, "--export", "fakequant")
        check(pg.returncode == 0 and pf.returncode == 0, f"{tag}: quantize into gguf and fakequant"
              + ("" if pg.returncode == 0 and pf.returncode == 0 else f" ({pg.stderr.strip()} {pf.stderr.strip()})"))
        if pg.returncode == 0 and pf.returncode == 0:
            compare(tag, os.path.join(out_g, "model.gguf"), out_f, types[fmt], config)
    # awq-joint into a K-quant: its search scores the weights the export stores (F32 here,
    # BF16 in a fake-quant export), so the two exports may choose other scales; the GGUF
    # is checked on its own: read back, every matrix of the K type, finite values.
    out_a = os.path.join(tmp.name, "awq-joint-q4_k")
    p = quantize(out_a, "--method", "awq-joint", "--format", "q4_k", "--export", "gguf")
    check(p.returncode == 0, f"awq-joint q4_k: quantize into gguf {p.stderr.strip()}")
    if p.returncode == 0:
        reader = gguf.GGUFReader(os.path.join(out_a, "model.gguf"))
        mats = [t for t in reader.tensors if t.name.startswith("blk.") and "norm" not in t.name]
        check(mats and all(t.tensor_type == gguf.GGMLQuantizationType.Q4_K for t in mats)
              and all(np.isfinite(quants.dequantize(t.data, t.tensor_type)).all() for t in mats),
              f"awq-joint q4_k: {len(mats)} Q4_K matrices read back, finite")
    p = quantize(os.path.join(tmp.name, "refused"), "--method", "rtn", "--format", "int4", "--export", "gguf")
    check(p.returncode == 2 and "--export gguf holds llama.cpp's block types" in p.stderr
          and len(p.stderr.strip().splitlines()) == 1, f"int4 into --export gguf refused with one line: {p.stderr.strip()}")
    refused = [  # docs/errors.md rows 49, 51, 55
        ("unknown mix", ["--method", "rtn", "--format", "gguf:IQ2_XS"], "not a llama.cpp mix qshard writes"),
        ("k-quant with smoothquant", ["--method", "smoothquant", "--format", "q4_k"],
         "--method smoothquant does not take --format q4_k"),
        ("bad --gguf-dense", ["--method", "rtn", "--format", "q4_0", "--gguf-dense", "f8"], "--gguf-dense 'f8' is not valid"),
    ]
    for what, args, want in refused:
        p = quantize(os.path.join(tmp.name, "refused-" + what.replace(" ", "-")), *args, "--export", "gguf")
        check(p.returncode == 2 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1,
              f"{what} refused with one line: {p.stderr.strip()}")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
