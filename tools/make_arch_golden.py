#!/usr/bin/env python3
"""Golden forward cases for the families tools/torch_llama.py does not implement, made
by Hugging Face transformers itself: tests/model/data/golden/<case>/.

For each case: a config.json as the Hub's checkpoints of that family spell it (rope_theta
at the top level, not transformers 5's rope_parameters), tiny random weights (seeded,
N(0, 0.1); q/k 0.15, embeddings 0.5, routers 0.5 so top-k choices are not near-ties,
norms 1 + N(0, 0.1)) stored in the case's dtype as model.safetensors, and
golden.safetensors (tokens I32 [B, S], logits F32 [B, S, V]) from
AutoModelForCausalLM.from_pretrained(case) in fp32 with eager attention, i.e. from the
weights as re-read from disk. source.txt names the transformers version; the C++ test
tests/model/test_forward.cpp runs every case, tools/check_torch_llama_vs_transformers.py
skips these (they are transformers' own output).

Needs transformers >= 4.51 for qwen3 / qwen3_moe: run it with the engines venv,
    $(launch/engines_venv.sh --python) tools/make_arch_golden.py [--only rand-qwen3]
"""
import argparse
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def base(model_type, arch, hidden, inter, layers, heads, kv, vocab, dtype, **extra):
    cfg = {"architectures": [arch], "model_type": model_type, "hidden_act": "silu",
           "torch_dtype": dtype, "bos_token_id": 1, "eos_token_id": 2, "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "rope_scaling": None, "tie_word_embeddings": False, "initializer_range": 0.02,
           "attention_dropout": 0.0, "use_cache": True}
    cfg.update(extra)
    return cfg


CASES = {
    # qwen3: q_norm/k_norm, no biases, head_dim 32 from config (!= hidden / heads = 16)
    "rand-qwen3": (base("qwen3", "Qwen3ForCausalLM", 64, 128, 2, 4, 2, 256, "bfloat16",
                        head_dim=32, attention_bias=False, use_sliding_window=False,
                        sliding_window=None, max_window_layers=2),
                   3001, 2, 20),
    # mixtral: router block_sparse_moe.gate, 4 experts w1/w2/w3, top-2, softmax then top-k
    # then renormalized
    "rand-mixtral": (base("mixtral", "MixtralForCausalLM", 64, 96, 2, 4, 2, 256, "bfloat16",
                          rms_norm_eps=1e-5, num_local_experts=4, num_experts_per_tok=2,
                          sliding_window=None, output_router_logits=False,
                          router_aux_loss_coef=0.02),
                     3002, 2, 20),
    # qwen2_moe: q/k/v biases, 4 experts of 48 + a shared expert of 96 behind a sigmoid
    # gate, top-2 without renormalization (norm_topk_prob false, as Qwen1.5-MoE)
    "rand-qwen2-moe": (base("qwen2_moe", "Qwen2MoeForCausalLM", 64, 128, 2, 4, 2, 256, "bfloat16",
                            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                            shared_expert_intermediate_size=96, norm_topk_prob=False,
                            decoder_sparse_step=1, mlp_only_layers=[], use_sliding_window=False,
                            sliding_window=None, max_window_layers=2, output_router_logits=False,
                            router_aux_loss_coef=0.001),
                       3003, 2, 20),
    # qwen3_moe: q_norm/k_norm, head_dim 32, 6 experts of 48, top-2 renormalized
    "rand-qwen3-moe": (base("qwen3_moe", "Qwen3MoeForCausalLM", 64, 128, 2, 4, 2, 256, "bfloat16",
                            head_dim=32, attention_bias=False, num_experts=6, num_experts_per_tok=2,
                            moe_intermediate_size=48, norm_topk_prob=True, decoder_sparse_step=1,
                            mlp_only_layers=[], use_sliding_window=False, sliding_window=None,
                            max_window_layers=2, output_router_logits=False,
                            router_aux_loss_coef=0.001),
                       3004, 2, 20),
}


def std_for(name):
    if name.endswith("norm.weight"):
        return None  # 1 + N(0, 0.1)
    if "embed_tokens" in name:
        return 0.5
    if "q_proj" in name or "k_proj" in name:
        return 0.15
    if name.endswith("mlp.gate.weight"):  # MoE router
        return 0.5
    return 0.1


def random_weights(model, gen):
    w = {}
    for name, p in model.state_dict().items():
        s = std_for(name)
        r = torch.randn(p.shape, generator=gen)
        w[name] = 1.0 + 0.1 * r if s is None else s * r
    return w


def make_case(out, name, cfg, seed, B, S):
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    gen = torch.Generator().manual_seed(seed)
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    skeleton.load_state_dict(random_weights(skeleton, gen))
    # save_pretrained writes the Hub's tensor names (transformers 5 fuses MoE experts in
    # memory, e.g. mlp.experts.gate_up_proj, and unfuses them on save).
    with tempfile.TemporaryDirectory() as tmp:
        skeleton.to(DTYPES[cfg["torch_dtype"]]).save_pretrained(tmp)
        shutil.copyfile(os.path.join(tmp, "model.safetensors"), os.path.join(d, "model.safetensors"))
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        raise SystemExit(f"{name}: transformers did not load every tensor: {info}")
    model.eval()
    tokens = torch.randint(0, cfg["vocab_size"], (B, S), generator=gen)
    with torch.no_grad():
        logits = model(input_ids=tokens, use_cache=False).logits.float()
    std = float(logits.std())
    if not (std > 0.1 and torch.isfinite(logits).all()):
        raise SystemExit(f"{name}: degenerate logits (std {std})")
    save_file({"tokens": tokens.to(torch.int32).contiguous(), "logits": logits.contiguous()},
              os.path.join(d, "golden.safetensors"),
              metadata={"case": name, "seed": str(seed), "generator": "tools/make_arch_golden.py",
                        "transformers": transformers.__version__})
    with open(os.path.join(d, "source.txt"), "w") as f:
        f.write(f"transformers {transformers.__version__} {type(model).__name__} "
                "(tools/make_arch_golden.py)\n")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name:16s} {type(model).__name__:22s} logits std {std:.3f}  {size / 1024:.0f} KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "model", "data", "golden"))
    ap.add_argument("--only", action="append", help="case name (repeatable); default: all")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, (cfg, seed, B, S) in CASES.items():
        if not args.only or name in args.only:
            make_case(args.out, name, cfg, seed, B, S)


if __name__ == "__main__":
    main()
