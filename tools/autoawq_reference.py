#!/usr/bin/env python3
"""AutoAWQ's activation-aware scale search for one scaling group, re-implemented from
reading AutoAWQ (casper-hansen/AutoAWQ, awq/quantize/quantizer.py: AwqQuantizer.
pseudo_quantize_tensor, _search_best_scale, _compute_best_scale, _compute_loss), to check
qshard's search (src/quant/awq.cpp, src/pipeline/awq_layer.cpp) against code we did not
write. Written from the description of those functions, not copied.

What AutoAWQ does for one group of linears sharing an input x (e.g. gate/up after the
post-attention norm, or down after up):
  x_mean   = mean over tokens of |x| per input channel (fp32 sum)
  for ratio = i / n_grid, i = 0 .. n_grid-1 (n_grid = 20):
      s = clamp(x_mean ** ratio, min=1e-4)            (duo_scaling=False; see below)
      s = s / sqrt(max(s) * min(s));  inf/nan entries -> 1
      W_k <- pseudo_quantize(W_k * s) / s   for every linear k of the group
      loss = mean((module2inspect(x) - fp_output) ** 2)
      keep the first strict minimum (`if loss < best_error`)
  pseudo_quantize (zero point, w_bit, group_size): per group of group_size inputs,
      scale = clamp(max - min, 1e-5) / (2**w_bit - 1),
      zero = clamp(-round(min / scale), 0, 2**w_bit - 1),
      w_hat = (clamp(round(w / scale) + zero, 0, 2**w_bit - 1) - zero) * scale.

Deliberate differences from a production AutoAWQ run, so that the comparison is at float
tolerance: fp32 throughout (AutoAWQ runs the module in fp16 on a GPU); module2inspect is
the group's linears themselves (their concatenated outputs; AutoAWQ uses the whole
attention / MLP block for q,k,v and gate,up, which qshard offers as --awq-loss block);
duo_scaling=False (AutoAWQ's default is True; qshard's awq implements llm-awq's
x_mean**ratio scale, which is AutoAWQ with duo_scaling=False).

CLI:
  autoawq_reference.py make-inputs OUT.safetensors [--seed N] [--model DIR]
      writes cases "<case>.x" [tokens, in] and "<case>.w0", "<case>.w1", ... (the weights
      of the tiny model's layer 1 when --model is given, activations synthetic with
      outlier channels)
  autoawq_reference.py check INPUTS.safetensors PROBE.json [--bits 4] [--group-size 128]
      runs the reference on every case and compares with the probe's JSON (chosen grid
      point, scales, per-point losses); exit 1 on a mismatch.
"""
import argparse
import json
import math
import sys

import torch


def pseudo_quantize(w, w_bit, group_size):
    """AutoAWQ's zero-point fake quantization (returns the dequantized weight)."""
    shape = w.shape
    g = w.reshape(-1, group_size)
    hi = g.amax(dim=1, keepdim=True)
    lo = g.amin(dim=1, keepdim=True)
    qmax = 2 ** w_bit - 1
    step = (hi - lo).clamp(min=1e-5) / qmax
    zero = torch.clamp(-torch.round(lo / step), 0, qmax)
    q = torch.clamp(torch.round(g / step) + zero, 0, qmax)
    return ((q - zero) * step).reshape(shape)


def awq_scale_candidates(x_mean, n_grid):
    """The n_grid candidate scale vectors (duo_scaling=False)."""
    out = []
    for i in range(n_grid):
        ratio = i / n_grid
        s = x_mean.pow(ratio).clamp(min=1e-4).view(-1)
        s = s / (s.max() * s.min()).sqrt()
        s[torch.isinf(s)] = 1
        s[torch.isnan(s)] = 1
        out.append(s)
    return out


def search_best_scale(x, weights, w_bit=4, group_size=128, n_grid=20):
    """(best grid index, best scales, per-point losses) for linears `weights` sharing x."""
    x = x.float()
    x_mean = x.abs().sum(dim=0) / x.shape[0]
    ref = torch.cat([x @ w.t() for w in weights], dim=1)
    best, best_err, losses, cands = -1, float("inf"), [], awq_scale_candidates(x_mean, n_grid)
    for i, s in enumerate(cands):
        sv = s.view(1, -1)
        out = torch.cat([x @ (pseudo_quantize(w * sv, w_bit, group_size) / sv).t() for w in weights], dim=1)
        # AutoAWQ's _compute_loss: sum of squares in fp32 chunks, divided by the element
        # count; one chunk here (the outputs are small), summed in fp64 for a stable check.
        loss = (ref.double() - out.double()).pow(2).sum().item() / ref.numel()
        losses.append(loss)
        if loss < best_err:
            best, best_err = i, loss
    return best, cands[best], losses


def make_inputs(path, seed, model):
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)

    def acts(tokens, d):
        # Per-channel magnitudes spread over two decades plus a few 20-50x outlier
        # channels, as LLM linear inputs have.
        mag = torch.exp(torch.randn(d, generator=gen) * 0.8)
        idx = torch.randperm(d, generator=gen)[: max(2, d // 64)]
        mag[idx] *= 20 + 30 * torch.rand(len(idx), generator=gen)
        return torch.randn(tokens, d, generator=gen) * mag

    weights = {}
    if model:
        from safetensors.torch import load_file
        import glob

        sd = {}
        for f in sorted(glob.glob(model + "/*.safetensors")):
            sd.update(load_file(f))
        p = "model.layers.1."
        weights = {
            "qkv": [sd[p + "self_attn." + n + "_proj.weight"] for n in ("q", "k", "v")],
            "gateup": [sd[p + "mlp." + n + "_proj.weight"] for n in ("gate", "up")],
            "down": [sd[p + "mlp.down_proj.weight"]],
        }
    else:
        weights = {
            "qkv": [torch.randn(256, 256, generator=gen) * 0.05 for _ in range(3)],
            "gateup": [torch.randn(768, 256, generator=gen) * 0.05 for _ in range(2)],
            "down": [torch.randn(256, 768, generator=gen) * 0.03],
        }
    tensors = {}
    for name, ws in weights.items():
        tensors[name + ".x"] = acts(512, ws[0].shape[1]).float().contiguous()
        for k, w in enumerate(ws):
            tensors[f"{name}.w{k}"] = w.float().contiguous()
    save_file(tensors, path)


def check(inputs, probe_json, bits, group_size, n_grid):
    from safetensors.torch import load_file

    t = load_file(inputs)
    probe = json.load(open(probe_json))
    names = sorted({k.split(".")[0] for k in t})
    ok = True
    for name in names:
        ws = [t[k] for k in sorted(k for k in t if k.startswith(name + ".w"))]
        best, scales, losses = search_best_scale(t[name + ".x"], ws, bits, group_size, n_grid)
        got = probe[name]
        ours = torch.tensor(got["scales"], dtype=torch.float32)
        scale_err = ((ours - scales).abs() / scales.abs()).max().item()
        loss_err = max(abs(a - b) / max(abs(b), 1e-30) for a, b in zip(got["loss"], losses))
        srt = sorted(losses)
        margin = (srt[1] - srt[0]) / srt[0]
        line = (f"{name}: alpha autoawq {best / n_grid:.2f} qshard {got['best'] / n_grid:.2f}  "
                f"scales max rel diff {scale_err:.2e}  loss max rel diff {loss_err:.2e}  "
                f"(runner-up margin {margin:.2%})")
        bad = got["best"] != best or scale_err > 1e-5 or loss_err > 1e-3
        print(("FAIL " if bad else "ok   ") + line)
        ok = ok and not bad
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-inputs")
    m.add_argument("out")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--model")
    c = sub.add_parser("check")
    c.add_argument("inputs")
    c.add_argument("probe_json")
    c.add_argument("--bits", type=int, default=4)
    c.add_argument("--group-size", type=int, default=128)
    c.add_argument("--n-grid", type=int, default=20)
    a = ap.parse_args()
    if a.cmd == "make-inputs":
        make_inputs(a.out, a.seed, a.model)
        return 0
    return 0 if check(a.inputs, a.probe_json, a.bits, a.group_size, a.n_grid) else 1


if __name__ == "__main__":
    sys.exit(main())
