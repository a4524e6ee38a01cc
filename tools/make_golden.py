#!/usr/bin/env python3
"""Write golden forward cases into tests/model/data/golden/<case>/.

Each case directory holds config.json + model.safetensors (the weights, or a
model_dir.txt naming a model directory relative to the repository root) and
golden.safetensors with
    tokens  I32 [B, S]      every row an independent window at positions 0..S-1
    logits  F32 [B, S, V]   from tools/torch_llama.py (fp32 compute, upcast weights)
The logits are always computed from the weights as re-read from the written file,
so bf16/f16 rounding is part of the case.

Usage (repo root):  .venv/bin/python tools/make_golden.py [--out tests/model/data/golden]
Needs torch, numpy, safetensors, sentencepiece.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_llama  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def base_config(model_type, arch, hidden, inter, layers, heads, kv, vocab, dtype, **extra):
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_act": "silu",
        "torch_dtype": dtype,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    cfg.update(extra)
    return cfg


def random_weights(cfg, gen, qkv_bias=False, o_bias=False, tie=False):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = torch_llama.head_dim_of(cfg)

    def rn(*shape, std=0.1):
        return torch.randn(*shape, generator=gen) * std

    def norm():
        return 1.0 + rn(H, std=0.1)

    w = {"model.embed_tokens.weight": rn(V, H, std=0.5)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "post_attention_layernorm.weight"] = norm()
        a = p + "self_attn."
        w[a + "q_proj.weight"] = rn(nh * D, H, std=0.15)
        w[a + "k_proj.weight"] = rn(nkv * D, H, std=0.15)
        w[a + "v_proj.weight"] = rn(nkv * D, H)
        w[a + "o_proj.weight"] = rn(H, nh * D)
        if qkv_bias:
            w[a + "q_proj.bias"] = rn(nh * D)
            w[a + "k_proj.bias"] = rn(nkv * D)
            w[a + "v_proj.bias"] = rn(nkv * D)
        if o_bias:
            w[a + "o_proj.bias"] = rn(H)
        m = p + "mlp."
        w[m + "gate_proj.weight"] = rn(I, H)
        w[m + "up_proj.weight"] = rn(I, H)
        w[m + "down_proj.weight"] = rn(H, I)
    w["model.norm.weight"] = norm()
    if not tie:
        w["lm_head.weight"] = rn(V, H)
    return w


def write_golden(case_dir, tokens, model, meta):
    logits = model(tokens.long())
    std = float(logits.std())
    if not (std > 0.1 and torch.isfinite(logits).all()):
        raise SystemExit(f"{case_dir}: degenerate logits (std {std})")
    save_file({"tokens": tokens.to(torch.int32).contiguous(),
               "logits": logits.float().contiguous()},
              os.path.join(case_dir, "golden.safetensors"),
              metadata={k: str(v) for k, v in meta.items()})
    return logits, std


def random_case(out, name, cfg, seed, B, S, qkv_bias=False, o_bias=False, check=None):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tie = cfg.get("tie_word_embeddings", False)
    w = random_weights(cfg, gen, qkv_bias=qkv_bias, o_bias=o_bias, tie=tie)
    dt = DTYPES[cfg["torch_dtype"]]
    w = {k: v.to(dt).contiguous() for k, v in w.items()}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    save_file(w, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    for stale in ("model_dir.txt",):
        if os.path.exists(os.path.join(d, stale)):
            os.remove(os.path.join(d, stale))
    model = torch_llama.load_model(d)           # re-read from disk
    tokens = torch.randint(0, cfg["vocab_size"], (B, S), generator=gen)
    logits, std = write_golden(d, tokens, model, {"case": name, "seed": seed,
                                                  "generator": "tools/make_golden.py"})
    if check:
        check(model, tokens, logits)
    return d, std


def check_rope_scaling_matters(model, tokens, logits):
    cfg = dict(model.cfg)
    scaled = torch_llama.rope_inv_freq(cfg)
    cfg["rope_scaling"] = None
    plain = torch_llama.rope_inv_freq(cfg)
    changed = int((scaled != plain).sum())
    alt = torch_llama.TorchLlama(model.model_dir, weights=model.w, config=cfg)(tokens)
    diff = float((alt - logits).abs().max())
    print(f"    llama3 rope: {changed}/{len(plain)} inv_freq changed; "
          f"max |logit diff| vs unscaled = {diff:.3f}")
    if changed == 0 or diff < 1e-2:
        raise SystemExit("rope scaling has no visible effect")


def gcide_case(out, model_rel, B, S):
    d = os.path.join(out, "tiny-gcide")
    os.makedirs(d, exist_ok=True)
    for stale in ("config.json", "model.safetensors"):
        if os.path.exists(os.path.join(d, stale)):
            os.remove(os.path.join(d, stale))
    with open(os.path.join(d, "model_dir.txt"), "w") as f:
        f.write(model_rel + "\n")
    mdir = os.path.join(ROOT, model_rel)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(mdir, "tokenizer.model"))
    with open(os.path.join(mdir, "text", "eval.txt"), encoding="utf-8") as f:
        text = f.read()
    ids = [sp.bos_id()] + sp.encode(text)
    tokens = torch.tensor(ids[:B * S]).view(B, S)
    model = torch_llama.load_model(mdir)
    _, std = write_golden(d, tokens, model, {"case": "tiny-gcide", "model_dir": model_rel,
                                             "generator": "tools/make_golden.py"})
    return d, std


def fix_modes(d):
    for f in os.listdir(d):                 # safetensors writes 0600; make them 0644
        os.chmod(os.path.join(d, f), 0o644)


def dir_size(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "model", "data", "golden"))
    ap.add_argument("--gcide-model", default="models/tiny-llama-gcide")
    ap.add_argument("--gcide-batch", type=int, default=2)
    ap.add_argument("--gcide-seqlen", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)          # fixed reduction order -> reproducible files
    out = args.out
    os.makedirs(out, exist_ok=True)
    results = []

    # (a) the bundled trained model, weights referenced not copied
    results.append(gcide_case(out, args.gcide_model, args.gcide_batch, args.gcide_seqlen))

    # (b) llama + llama3 rope scaling, bf16, GQA 4/2, head_dim 16
    # inv_freq wavelengths 2*pi*1e4^(i/8) = 6.3, 19.9, 62.8, 199, 628, ... ; with
    # original_max_position_embeddings 256, low/high freq factor 1/4 -> i<=2 kept,
    # i=3 smoothed, i>=4 divided by factor.
    cfg = base_config("llama", "LlamaForCausalLM", 64, 128, 2, 4, 2, 288, "bfloat16",
                      rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                      rope_theta=10000.0, max_position_embeddings=2048,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 256})
    results.append(random_case(out, "rand-llama3", cfg, 1001, 2, 24,
                               check=check_rope_scaling_matters))

    # (c) qwen2: q/k/v biases, tied embeddings (no lm_head.weight), f16, GQA 4/1
    cfg = base_config("qwen2", "Qwen2ForCausalLM", 48, 128, 2, 4, 1, 320, "float16",
                      rope_theta=1000000.0, tie_word_embeddings=True,
                      use_sliding_window=False, sliding_window=None, max_window_layers=2,
                      attention_dropout=0.0)
    results.append(random_case(out, "rand-qwen2", cfg, 1002, 2, 20, qkv_bias=True))

    # (d) mistral: f32, explicit head_dim 16 != hidden/heads (32/4 = 8), GQA 4/2
    cfg = base_config("mistral", "MistralForCausalLM", 32, 80, 2, 4, 2, 256, "float32",
                      head_dim=16, sliding_window=None, rope_theta=10000.0,
                      rms_norm_eps=1e-5, attention_dropout=0.0)
    results.append(random_case(out, "rand-mistral", cfg, 1003, 2, 24))

    # (e) llama-2 style: MHA (kv == heads), theta 1e4, no rope scaling, no biases
    cfg = base_config("llama", "LlamaForCausalLM", 48, 128, 2, 4, 4, 300, "bfloat16",
                      rms_norm_eps=1e-5, attention_bias=False, mlp_bias=False,
                      rope_theta=10000.0, max_position_embeddings=4096)
    results.append(random_case(out, "rand-llama2", cfg, 1004, 2, 24))

    for d, std in results:
        fix_modes(d)
        print(f"{os.path.relpath(d, ROOT):45s} {dir_size(d) / 1024:7.1f} KiB  logits std {std:.3f}")


if __name__ == "__main__":
    main()
