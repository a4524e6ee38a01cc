#!/usr/bin/env python3
"""GPTQ int4 g128 (no act-order, lazy batch 128, damp 0.01) on the GPU: a PyTorch version
of the reference algorithm (written here from algorithms.md §1, fp32, like gptq.py's
fasterquant) against `bench_cuda_layer --gptq-only`, at the 70B layer shapes. Prints a
table with the ratio torch / qshard. Needs a GPU and torch with CUDA.

  python bench/bench_cuda_gptq_torch.py build/bench/bench_cuda_layer [--tokens 4096]
"""
import argparse
import subprocess
import sys
import time

import torch

SHAPES = [(8192, 8192), (1024, 8192), (28672, 8192), (8192, 28672)]  # q/o, k/v, gate/up, down


def quantize_int(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def group_params(w, maxq):  # symmetric: zero = (maxq + 1) / 2
    xmax = torch.maximum(w.abs().amax(dim=1), torch.zeros(1, device=w.device))
    xmax[xmax == 0] = 1
    scale = 2 * xmax / maxq
    return scale.unsqueeze(1), torch.full_like(scale, (maxq + 1) / 2).unsqueeze(1)


def gptq(W, H, bits=4, group=128, block=128, damp=0.01):
    W = W.clone().float()
    d = W.shape[1]
    maxq = 2 ** bits - 1
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(d, device=H.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scale = zero = None
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        W1 = W[:, i1:i2].clone()
        E1 = torch.zeros_like(W1)
        Ub = U[i1:i2, i1:i2]
        for t in range(i2 - i1):
            j = i1 + t
            if j % group == 0:
                scale, zero = group_params(W[:, j:j + group], maxq)
            w = W1[:, t:t + 1]
            q = quantize_int(w, scale, zero, maxq)
            Q[:, j:j + 1] = q
            err = (w - q) / Ub[t, t]
            W1[:, t:] -= err.matmul(Ub[t:t + 1, t:])
            E1[:, t:t + 1] = err
        W[:, i2:] -= E1.matmul(U[i1:i2, i2:])
    return Q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench_bin")
    ap.add_argument("--tokens", type=int, default=4096)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("skip: torch sees no GPU")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    print(f"# GPTQ int4 g128, {args.tokens} tokens for H; torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0)}")
    print(f"# {'out':>6} {'in':>6} {'torch_s':>9} {'qshard_s':>9} {'ratio':>7}")
    for out, inp in SHAPES:
        g = torch.Generator(device=dev).manual_seed(1)
        W = torch.randn(out, inp, device=dev, generator=g) * 0.02
        X = torch.randn(args.tokens, inp, device=dev, generator=g)
        X[:, 7::61] *= 12
        H = X.T @ X
        gptq(W[:256], H)  # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        gptq(W, H)
        torch.cuda.synchronize()
        t_torch = time.time() - t0
        p = subprocess.run([args.bench_bin, "--gptq-only", str(out), str(inp), "--tokens", str(args.tokens)],
                           stdout=subprocess.PIPE, text=True, check=True)
        t_ours = float(p.stdout.split()[-1])
        print(f"  {out:>6} {inp:>6} {t_torch:>9.3f} {t_ours:>9.3f} {t_torch / t_ours:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
