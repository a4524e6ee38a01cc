#!/usr/bin/env python3
"""Write a synthetic HF checkpoint with a real model's exact geometry and N layers.

For host-side measurements at a size no test model has (bench/slice70b): the tensors,
shapes, dtype (bf16), sharding (one shard per layer, the embedding and the head apart,
model.safetensors.index.json) and config.json of Llama-3-70B or Qwen2.5-72B (q/k/v
biases), a tokenizer.json from llama.cpp's vocabulary of that family, and a token file
of seeded random ids for `qshard quantize --calib DIR/calib.tokens`.

Weights are seeded Gaussians with heavy-tailed outlier channels: every Linear's input
columns get a log-normal scale and 0.5% of them 8x more; the RMSNorm weights and the
embedding lift 0.2% of the hidden channels (the same ones in every layer) 10x and 5x,
so activations carry outlier channels as trained LLMs' do. Numbers, not language:
quality measured on it means nothing; time, memory and bytes do.

    .venv/bin/python tools/make_synthetic_checkpoint.py --geometry llama3-70b --layers 2 \\
        --out /tmp/llama70b-2l [--calib-tokens 8192] [--seed 0] [--vocab-dir DIR]

--geometry tiny-llama / tiny-qwen: the same layout at hidden 256 (tests of the tool).
Writes with numpy only, streaming rows, so memory stays at ~1 GB whatever the geometry.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

GEOMETRIES = {
    # meta-llama/Meta-Llama-3-70B config.json
    "llama3-70b": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=8192,
                       intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                       vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                       max_position_embeddings=8192, bos_token_id=128000, eos_token_id=128001,
                       attention_bias=False, vocab="llama-bpe"),
    # Qwen/Qwen2.5-72B config.json
    "qwen2.5-72b": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=8192,
                        intermediate_size=29568, num_attention_heads=64, num_key_value_heads=8,
                        vocab_size=152064, rms_norm_eps=1e-5, rope_theta=1000000.0,
                        max_position_embeddings=131072, bos_token_id=151643, eos_token_id=151643,
                        attention_bias=True, vocab="qwen2"),
    "tiny-llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=256,
                       intermediate_size=896, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                       max_position_embeddings=8192, bos_token_id=128000, eos_token_id=128001,
                       attention_bias=False, vocab="llama-bpe"),
    "tiny-qwen": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=256,
                      intermediate_size=896, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=152064, rms_norm_eps=1e-5, rope_theta=1000000.0,
                      max_position_embeddings=131072, bos_token_id=151643, eos_token_id=151643,
                      attention_bias=True, vocab="qwen2"),
}

CHUNK = 1 << 24  # elements generated at a time


def bf16_bytes(x):
    """float32 -> bf16 bytes, round to nearest even (what torch's .to(bfloat16) does)."""
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


class Spec:
    """One tensor: shape and how to draw it (rows come out in chunks)."""

    def __init__(self, name, shape, kind, col_scale=None):
        self.name, self.shape, self.kind, self.col_scale = name, tuple(shape), kind, col_scale

    def nbytes(self):
        return int(np.prod(self.shape)) * 2

    def chunks(self, rng, outliers):
        if self.kind == "norm":  # RMSNorm weight: ~1, outlier channels lifted
            g = 1.0 + 0.1 * rng.standard_normal(self.shape[0], dtype=np.float32)
            g[outliers] *= 10.0
            yield g
            return
        if self.kind == "bias":
            yield 0.02 * rng.standard_normal(self.shape[0], dtype=np.float32)
            return
        rows, cols = self.shape
        step = max(1, CHUNK // cols)
        for r0 in range(0, rows, step):
            n = min(step, rows - r0)
            x = rng.standard_normal((n, cols), dtype=np.float32)
            x *= 0.02
            if self.col_scale is not None:
                x *= self.col_scale
            yield x


def layer_specs(g, layer, rng):
    h, i = g["hidden_size"], g["intermediate_size"]
    hd = h // g["num_attention_heads"]
    q, kv = g["num_attention_heads"] * hd, g["num_key_value_heads"] * hd

    def cols(n):  # heavy-tailed input channels
        s = np.exp(0.3 * rng.standard_normal(n)).astype(np.float32)
        s[rng.choice(n, max(1, n // 200), replace=False)] *= 8.0
        return s

    p = f"model.layers.{layer}."
    ch, cq, ci = cols(h), cols(q), cols(i)
    specs = [Spec(p + "input_layernorm.weight", [h], "norm"),
             Spec(p + "self_attn.q_proj.weight", [q, h], "w", ch),
             Spec(p + "self_attn.k_proj.weight", [kv, h], "w", ch),
             Spec(p + "self_attn.v_proj.weight", [kv, h], "w", ch),
             Spec(p + "self_attn.o_proj.weight", [h, q], "w", cq),
             Spec(p + "post_attention_layernorm.weight", [h], "norm"),
             Spec(p + "mlp.gate_proj.weight", [i, h], "w", ch),
             Spec(p + "mlp.up_proj.weight", [i, h], "w", ch),
             Spec(p + "mlp.down_proj.weight", [h, i], "w", ci)]
    if g["attention_bias"]:
        specs += [Spec(p + f"self_attn.{m}_proj.bias", [n], "bias") for m, n in (("q", q), ("k", kv), ("v", kv))]
    return specs


def write_shard(path, specs, rng, outliers):
    header, off = {}, 0
    for s in specs:
        header[s.name] = {"dtype": "BF16", "shape": list(s.shape), "data_offsets": [off, off + s.nbytes()]}
        off += s.nbytes()
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for s in specs:
            for x in s.chunks(rng, outliers):
                f.write(bf16_bytes(np.ascontiguousarray(x, dtype=np.float32)))
    return off


def write_tokenizer(g, vocab_dir, out):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gguf  # noqa: E402  (the venv's; only needed here)
    import gguf_vocab_to_tokenizer_json as conv  # noqa: E402
    path = os.path.join(vocab_dir, f"ggml-vocab-{g['vocab']}.gguf")
    if not os.path.isfile(path):
        sys.exit(f"make_synthetic_checkpoint: {path} is missing: run launch/fetch_testdata.sh")
    conv.write_files(conv.tokenizer_files(gguf.GGUFReader(path)), out)
    with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
        return len(json.load(f)["model"]["vocab"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--geometry", required=True, choices=sorted(GEOMETRIES))
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib-tokens", type=int, default=8192, help="random ids written to OUT/calib.tokens")
    ap.add_argument("--vocab-dir", default=os.environ.get(
        "QSHARD_VOCAB_DIR", os.path.expanduser("~/.cache/qshard/llama-vocab-0.3.36")))
    a = ap.parse_args()
    if a.layers < 1:
        ap.error("--layers must be positive")
    g = GEOMETRIES[a.geometry]
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    h, v = g["hidden_size"], g["vocab_size"]
    outliers = rng.choice(h, max(1, h // 500), replace=False)  # shared by every norm and the embedding
    emb_cols = np.ones(h, dtype=np.float32)
    emb_cols[outliers] = 5.0

    shards = [[Spec("model.embed_tokens.weight", [v, h], "w", emb_cols)]]
    shards += [layer_specs(g, l, rng) for l in range(a.layers)]
    shards.append([Spec("model.norm.weight", [h], "norm"), Spec("lm_head.weight", [v, h], "w")])
    n = len(shards)
    weight_map, total = {}, 0
    for k, specs in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        total += write_shard(os.path.join(a.out, name), specs, rng, outliers)
        weight_map.update({s.name: name for s in specs})
        print(f"wrote {name}", flush=True)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    config = {k: val for k, val in g.items() if k != "vocab"}
    config.update(num_hidden_layers=a.layers, hidden_act="silu", torch_dtype="bfloat16",
                  tie_word_embeddings=False, rope_scaling=None, use_cache=True,
                  head_dim=h // g["num_attention_heads"], initializer_range=0.02)
    if g["model_type"] == "qwen2":
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=80)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    n_tok = write_tokenizer(g, a.vocab_dir, a.out)
    # Ids below the tokenizer's (regular + special) count, never outside the embedding.
    ids = np.random.default_rng(a.seed + 1).integers(0, min(n_tok, v), a.calib_tokens, dtype=np.int32)
    ids.astype("<i4").tofile(os.path.join(a.out, "calib.tokens"))
    print(f"{a.out}: {a.geometry}, {a.layers} layers, {total / 1e9:.2f} GB of weights, "
          f"{a.calib_tokens} calibration tokens in calib.tokens")


if __name__ == "__main__":
    main()
