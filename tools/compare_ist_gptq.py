#!/usr/bin/env python3
"""Side-by-side check of qshard's GPTQ against the reference implementation
(IST-DASLab/gptq: gptq.py + quant.py, not part of this repository) on a real layer.

Takes layer 0's q_proj of the tiny model, builds its calibration inputs exactly
(rmsnorm(embed(tokens)) with input_layernorm, from consecutive 256-token windows of
calib.txt), runs the reference GPTQ (int4, group 128, sym, block 128, damp 0.01) and
qshard's (through build/bench/bench_gptq --dir) on the same weight and Hessian, and
reports the share of identical dequantized weights and both output errors.

    git -C <mirror of IST-DASLab/gptq> show HEAD:gptq.py > /tmp/ist/gptq.py   (and quant.py)
    .venv/bin/python tools/compare_ist_gptq.py --gptq-src /tmp/ist --bench build/bench/bench_gptq
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptq-src", required=True, help="folder with the reference gptq.py and quant.py")
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench", "bench_gptq"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--windows", type=int, default=32)
    a = ap.parse_args()
    sys.path.insert(0, a.gptq_src)
    from gptq import GPTQ  # noqa: E402  (the reference, loaded from outside the repo)
    from quant import Quantizer  # noqa: E402
    torch.set_num_threads(2)
    torch.cuda.synchronize = lambda *args, **kw: None  # the reference times itself with CUDA syncs

    w = load_file(os.path.join(a.model, "model.safetensors"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    ids = [sp.bos_id()] + sp.encode(open(os.path.join(a.model, "text", "calib.txt")).read())
    toks = torch.tensor(ids[: a.windows * 256]).view(a.windows, 256)
    h = w["model.embed_tokens.weight"].float()[toks]
    x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * w["model.layers.0.input_layernorm.weight"].float()
    weight = w["model.layers.0.self_attn.q_proj.weight"].float()
    n = weight.shape[1]
    assert weight.shape[0] == n, "bench_gptq takes square layers"

    layer = torch.nn.Linear(n, n, bias=False)
    layer.weight.data = weight.clone()
    ref = GPTQ(layer)
    for i in range(a.windows):  # one sequence per batch, as the reference's hooks see them
        ref.add_batch(x[i:i + 1], None)
    H = ref.H.clone()
    ref.quantizer = Quantizer()
    ref.quantizer.configure(4, perchannel=True, sym=True, mse=False)
    ref.fasterquant(blocksize=128, percdamp=0.01, groupsize=128, actorder=False)
    q_ref = layer.weight.data.float().numpy()

    with tempfile.TemporaryDirectory() as d:
        weight.numpy().astype(np.float32).tofile(os.path.join(d, f"w_{n}x{n}.f32"))
        H.numpy().astype(np.float32).tofile(os.path.join(d, f"h_{n}.f32"))
        subprocess.run([a.bench, "--dir", d, "--cols", str(n), "--reps", "1"], check=True,
                       stdout=subprocess.DEVNULL)
        q_ours = np.fromfile(os.path.join(d, f"q_{n}x{n}.f32"), dtype=np.float32).reshape(n, n)

    Hn = H.double().numpy()
    W = weight.double().numpy()

    def err(q):
        dw = W - q
        return np.einsum("ij,jk,ik->", dw, Hn, dw) / np.einsum("ij,jk,ik->", W, Hn, W)

    same = np.mean(np.isclose(q_ours, q_ref, rtol=0, atol=1e-7)) * 100
    print(f"# layer 0 q_proj {n}x{n}, int4 g128 sym, {a.windows}x256 calibration tokens")
    print(f"identical dequantized weights: {same:.2f}%")
    print(f"relative output error ||(W-Q)X||^2/||WX||^2: qshard {err(q_ours):.6e}  "
          f"reference {err(q_ref):.6e}")
    return 0 if same >= 99.0 else 1


if __name__ == "__main__":
    sys.exit(main())
