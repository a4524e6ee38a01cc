#!/usr/bin/env python3
"""Plain PyTorch reference forward for Llama / Mistral / Qwen2 causal LMs.

Loads a Hugging Face model directory (config.json + model.safetensors, or a sharded
checkpoint with model.safetensors.index.json), upcasts every weight to fp32 and runs
a full-sequence forward in fp32 that mirrors transformers' eager implementation:

  * RMSNorm:   x * rsqrt(mean(x^2) + eps) * weight
  * RoPE:      rotate-half, inv_freq = 1 / theta ** (arange(0, D, 2).float() / D),
               rope_scaling: none | "default" | "llama3" | "linear"
               (llama3 = transformers' _compute_llama3_parameters; linear divides
               inv_freq by factor, i.e. positions / factor as in transformers >= 4.43)
  * attention: GQA (repeat_kv), causal softmax, scale 1/sqrt(head_dim); head_dim from
               config["head_dim"] when present, else hidden_size // num_attention_heads.
               q/k/v/o biases are used whenever the tensors exist (qwen2 q/k/v,
               llama attention_bias); mistral sliding_window honoured when set.
  * MLP:       down(silu(gate(x)) * up(x))  (mlp biases used when present)
  * lm_head:   embed_tokens when tie_word_embeddings is true or lm_head.weight absent.

Input tokens LongTensor [B, S]; every row is an independent window at positions
0..S-1. Output logits [B, S, V] fp32. Works with torch >= 1.13.

Library use:
    from torch_llama import load_model
    m = load_model("models/tiny-llama-gcide")
    logits = m(torch.tensor([[1, 2, 3]]))

CLI:  python3 tools/torch_llama.py --model DIR --tokens 1,450,300
"""
import argparse
import json
import math
import os
import sys

import torch

SUPPORTED = ("llama", "mistral", "qwen2")


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def _safetensor_files(model_dir):
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        return [os.path.join(model_dir, s) for s in sorted(set(wm.values()))]
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return [single]
    raise FileNotFoundError(f"no model.safetensors(.index.json) in {model_dir}")


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors_plain(path):
    """Minimal safetensors reader (no `safetensors` package needed; little-endian host)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = _ST_DTYPES[info["dtype"]]
        if b == a:
            t = torch.empty(info["shape"], dtype=dt)
        else:
            t = torch.frombuffer(data, dtype=torch.uint8, count=b - a, offset=a).clone()
            t = t.view(dt).reshape(info["shape"])
        out[name] = t
    return out


def read_safetensors(path):
    try:
        from safetensors import safe_open
    except ImportError:
        return read_safetensors_plain(path)
    out = {}
    with safe_open(path, framework="pt") as f:
        for name in f.keys():
            out[name] = f.get_tensor(name)
    return out


def load_weights(model_dir, dtype=torch.float32):
    """name -> tensor, converted to `dtype` (None keeps the stored dtype)."""
    out = {}
    for path in _safetensor_files(model_dir):
        for name, t in read_safetensors(path).items():
            out[name] = t if dtype is None else t.to(dtype)
    return out


def head_dim_of(cfg):
    hd = cfg.get("head_dim")
    if hd is None:
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    return int(hd)


def rope_inv_freq(cfg):
    """fp32 inverse frequencies [D/2], exactly as transformers computes them."""
    D = head_dim_of(cfg)
    D = int(D * cfg.get("partial_rotary_factor", 1.0))
    base = cfg.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv_freq
    rtype = rs.get("rope_type", rs.get("type", "default"))
    if rtype == "default":
        return inv_freq
    if rtype == "linear":
        return inv_freq / rs["factor"]
    if rtype == "llama3":
        factor = rs["factor"]
        low_freq_factor = rs["low_freq_factor"]
        high_freq_factor = rs["high_freq_factor"]
        old_context_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, inv_freq_llama)
    raise NotImplementedError(f"rope_scaling type {rtype!r}")


def rope_cos_sin(cfg, seq_len):
    inv_freq = rope_inv_freq(cfg)
    pos = torch.arange(seq_len, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]          # == transformers' [D/2,1]@[1,S] matmul
    emb = torch.cat((freqs, freqs), dim=-1)            # [S, D]
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def repeat_kv(x, n_rep):
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None, :, :].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _linear(x, w, b=None):
    return torch.nn.functional.linear(x, w, b)


class TorchLlama:
    def __init__(self, model_dir, weights=None, config=None):
        self.model_dir = model_dir
        self.cfg = cfg = config if config is not None else load_config(model_dir)
        mt = cfg.get("model_type")
        if mt not in SUPPORTED:
            raise NotImplementedError(f"model_type {mt!r} (supported: {SUPPORTED})")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise NotImplementedError(f"hidden_act {act!r}")
        self.w = weights if weights is not None else load_weights(model_dir)
        self.model_type = mt
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        self.head_dim = head_dim_of(cfg)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.vocab = cfg["vocab_size"]
        self.window = None
        if mt == "mistral" and cfg.get("sliding_window") is not None:
            self.window = int(cfg["sliding_window"])
        if mt == "qwen2" and cfg.get("use_sliding_window"):
            self.window = -1  # not mirrored; refuse when it could matter
        tie = cfg.get("tie_word_embeddings", False)
        if tie or "lm_head.weight" not in self.w:
            self.lm_head = self.w["model.embed_tokens.weight"]
        else:
            self.lm_head = self.w["lm_head.weight"]

    def _attn_mask(self, S):
        q = torch.arange(S)[:, None]
        k = torch.arange(S)[None, :]
        allowed = k <= q
        if self.window is not None and self.window > 0:
            allowed &= (q - k) < self.window
        if self.window == -1 and S > int(self.cfg.get("sliding_window") or S):
            raise NotImplementedError("qwen2 use_sliding_window with S > sliding_window")
        m = torch.zeros(S, S, dtype=torch.float32)
        m.masked_fill_(~allowed, torch.finfo(torch.float32).min)
        return m

    @torch.no_grad()
    def hidden_states(self, tokens):
        """Final-norm hidden states [B, S, H] fp32."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() == 1:
            tokens = tokens[None]
        B, S = tokens.shape
        w = self.w
        nh, nkv, D = self.n_heads, self.n_kv, self.head_dim
        x = w["model.embed_tokens.weight"][tokens]                 # [B,S,H]
        cos, sin = rope_cos_sin(self.cfg, S)                        # [S,D]
        mask = self._attn_mask(S)
        sqrt_d = math.sqrt(D)
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], self.eps)
            a = p + "self_attn."
            q = _linear(h, w[a + "q_proj.weight"], w.get(a + "q_proj.bias"))
            k = _linear(h, w[a + "k_proj.weight"], w.get(a + "k_proj.bias"))
            v = _linear(h, w[a + "v_proj.weight"], w.get(a + "v_proj.bias"))
            q = q.view(B, S, nh, D).transpose(1, 2)
            k = k.view(B, S, nkv, D).transpose(1, 2)
            v = v.view(B, S, nkv, D).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = repeat_kv(k, nh // nkv)
            v = repeat_kv(v, nh // nkv)
            s = torch.matmul(q, k.transpose(2, 3)) / sqrt_d + mask
            s = torch.softmax(s, dim=-1, dtype=torch.float32)
            o = torch.matmul(s, v).transpose(1, 2).reshape(B, S, nh * D)
            x = x + _linear(o, w[a + "o_proj.weight"], w.get(a + "o_proj.bias"))
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            m = p + "mlp."
            g = _linear(h, w[m + "gate_proj.weight"], w.get(m + "gate_proj.bias"))
            u = _linear(h, w[m + "up_proj.weight"], w.get(m + "up_proj.bias"))
            x = x + _linear(torch.nn.functional.silu(g) * u, w[m + "down_proj.weight"],
                            w.get(m + "down_proj.bias"))
        return rms_norm(x, w["model.norm.weight"], self.eps)

    @torch.no_grad()
    def forward(self, tokens):
        """tokens [B,S] (or [S]) -> logits [B,S,V] fp32."""
        return _linear(self.hidden_states(tokens), self.lm_head)

    __call__ = forward


def load_model(model_dir):
    return TorchLlama(model_dir)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", help="comma-separated token ids")
    ap.add_argument("--text", help="text to tokenize with tokenizer.model (BOS prepended)")
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()
    m = load_model(args.model)
    if args.text is not None:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
        toks = [sp.bos_id()] + sp.encode(args.text)
    elif args.tokens:
        toks = [int(t) for t in args.tokens.split(",")]
    else:
        sys.exit("give --tokens or --text")
    logits = m(torch.tensor([toks]))[0]
    print(f"# {m.model_type} layers={m.n_layers} heads={m.n_heads}/{m.n_kv} head_dim={m.head_dim} "
          f"vocab={m.vocab} tokens={len(toks)}")
    for t in range(len(toks)):
        v, ix = logits[t].topk(min(args.top, logits.shape[-1]))
        tops = " ".join(f"{int(j)}:{float(s):.4f}" for s, j in zip(v, ix))
        print(f"{t}\t{toks[t]}\t{tops}")


if __name__ == "__main__":
    main()
