#!/usr/bin/env python3
"""Per-layer GPTQ time: qshard (C++) against a PyTorch GPTQ written the way the reference
IST-DASLab gptq.py / quant.py is (lazy-batch loop in Python over torch ops), on the same
seeded inputs and the same cores.

    .venv/bin/python bench/bench_gptq.py build/bench/bench_gptq [--cols 256,1024,4096]
        [--shapes 8192x8192,28672x8192,8192x28672] [--threads 2] [--reps 3] [--torch-reps 1]

Int4, group 128, symmetric, no act-order, block 128, damp 0.01. Shapes are rows x columns
(out x in features; --cols N is N x N; 28672x8192 is a 70B gate/up_proj, 8192x28672 its
down_proj with a 28672² Hessian). Inputs: W ~ N(0, 0.02²); X = Z + F·Aᵀ (rank-8 shared
part) with every 61st channel ×12, min(2·cols, 8192) tokens; H = 2/N·XᵀX in fp32. Both
results are checked with the relative output error ‖(W−Q)Xᵀ‖²/‖WXᵀ‖² = tr(ΔHΔᵀ)/tr(WHWᵀ).
Peak RSS: each side's own process (inputs included): qshard's as it reports it, torch's
from a forked child (the pages of W and H it touches count).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch


# ---------------------------------------------------------------- reference-style GPTQ
def quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


class Quantizer:
    """quant.py Quantizer (weight mode, per row, no MSE search)."""

    def __init__(self, bits, sym):
        self.maxq = torch.tensor(2 ** bits - 1)
        self.sym = sym

    def find_params(self, x):
        tmp = torch.zeros(x.shape[0])
        xmin = torch.minimum(x.min(1)[0], tmp)
        xmax = torch.maximum(x.max(1)[0], tmp)
        if self.sym:
            xmax = torch.maximum(torch.abs(xmin), xmax)
            tmp = xmin < 0
            if torch.any(tmp):
                xmin[tmp] = -xmax[tmp]
        tmp = (xmin == 0) & (xmax == 0)
        xmin[tmp] = -1
        xmax[tmp] = +1
        self.scale = (xmax - xmin) / self.maxq
        if self.sym:
            self.zero = torch.full_like(self.scale, (self.maxq + 1) / 2)
        else:
            self.zero = torch.round(-xmin / self.scale)
        self.scale = self.scale.unsqueeze(1)
        self.zero = self.zero.unsqueeze(1)


def fasterquant(W, H, bits=4, sym=True, blocksize=128, percdamp=0.01, groupsize=128):
    """gptq.py GPTQ.fasterquant (no act-order, no static groups), returns Q."""
    W = W.clone().float()
    H = H.clone()
    columns = W.shape[1]
    quantizer = Quantizer(bits, sym)
    if groupsize == -1:
        quantizer.find_params(W)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1 and (i1 + i) % groupsize == 0:
                quantizer.find_params(W[:, (i1 + i):(i1 + i + groupsize)])
            q = quantize(w.unsqueeze(1), quantizer.scale, quantizer.zero, quantizer.maxq).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q, float(torch.sum(Losses))


# ---------------------------------------------------------------- inputs
def make_inputs(rows, n):
    g = torch.Generator().manual_seed(n)
    W = 0.02 * torch.randn(rows, n, generator=g)
    tokens, r = min(2 * n, 8192), 8
    A = 0.7 * torch.randn(n, r, generator=g)
    X = torch.randn(tokens, n, generator=g) + torch.randn(tokens, r, generator=g) @ A.T
    X[:, 7::61] *= 12.0
    H = (2.0 / tokens) * (X.T @ X)
    H = 0.5 * (H + H.T)  # exactly symmetric, as SYRK + mirror gives
    return W.contiguous(), H.contiguous()


def rel_error(W, Q, H):
    D = (W - Q).double()
    Hd = H.double()
    Wd = W.double()
    return float(torch.sum((D @ Hd) * D) / torch.sum((Wd @ Hd) * Wd))


def torch_in_child(name, rows, n, threads, reps, tmp):
    """The reference GPTQ in a fresh interpreter (a forked one would inherit torch's OpenMP
    pool, which hangs after fork) reading the same input files, so that its peak RSS is its
    own (wait4's rusage); returns (median seconds, peak MiB, Q)."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-child", tmp, name,
                          str(threads), str(reps)])
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit(f"the torch GPTQ child failed (status {status})")
    with open(os.path.join(tmp, "torch_q.s")) as f:
        seconds = float(f.read())
    Q = torch.from_numpy(np.fromfile(os.path.join(tmp, "torch_q.f32"), dtype="<f4").reshape(rows, n))
    return seconds, usage.ru_maxrss / 1024.0, Q


def torch_child(tmp, name, threads, reps):
    rows, n = (int(v) for v in name.split("x"))
    torch.set_num_threads(threads)
    W = torch.from_numpy(np.fromfile(os.path.join(tmp, f"w_{name}.f32"), dtype="<f4").reshape(rows, n))
    H = torch.from_numpy(np.fromfile(os.path.join(tmp, f"h_{n}.f32"), dtype="<f4").reshape(n, n))
    Ww, Hw = make_inputs(256, 256)
    fasterquant(Ww, Hw)  # warm-up, outside the timing
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        Q, _ = fasterquant(W, H)
        ts.append(time.perf_counter() - t0)
    Q.numpy().astype("<f4").tofile(os.path.join(tmp, "torch_q.f32"))
    with open(os.path.join(tmp, "torch_q.s"), "w") as f:
        f.write(str(sorted(ts)[len(ts) // 2]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", help="path to the bench_gptq binary")
    ap.add_argument("--cols", default="256,1024,4096")
    ap.add_argument("--shapes", default="", help="ROWSxCOLS,... after --cols (e.g. 8192x8192,28672x8192)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="qshard repetitions (median)")
    ap.add_argument("--torch-reps", type=int, default=1, help="torch repetitions (median)")
    args = ap.parse_args()
    shapes = [(int(c), int(c)) for c in args.cols.split(",") if c]
    shapes += [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    torch.set_num_threads(args.threads)

    print(f"# GPTQ per layer: int4 g128 sym, block 128, damp 0.01, "
          f"{args.threads} threads (torch {torch.__version__}, set_num_threads({args.threads}); "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} for both)")
    print(f"# qshard: median of {args.reps} after a warm-up; torch (reference-style lazy-batch "
          f"loop in Python): median of {args.torch_reps}")
    print("# err = ||(W-Q)X^T||^2/||WX^T||^2; same_q = share of weights whose dequantized values agree")
    print(f"# {'rows x cols':>12} {'qshard_s':>10} {'torch_s':>10} {'speedup':>8} {'err_qshard':>11} "
          f"{'err_torch':>11} {'same_q_%':>9} {'qshard_MiB':>10} {'torch_MiB':>10}")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="bench_gptq_") as tmp:
        for rows, n in shapes:
            name = f"{rows}x{n}"
            W, H = make_inputs(rows, n)
            W.numpy().astype("<f4").tofile(os.path.join(tmp, f"w_{name}.f32"))
            H.numpy().astype("<f4").tofile(os.path.join(tmp, f"h_{n}.f32"))
            # qshard and torch back to back per size, so both see the same machine state. The
            # pause lets this process's BLAS worker threads (busy-waiting after X^T X) park
            # before the subprocess runs; otherwise they steal one of the two cores from it.
            time.sleep(1.0)
            out = subprocess.run([args.binary, "--dir", tmp, "--shapes", name, "--reps", str(args.reps)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            tc = mc = None
            for line in out.splitlines():
                f = line.split()
                if len(f) >= 10 and f[0] == "shape" and f[1] == name:
                    tc, mc = float(f[3]), float(f[9])
            if tc is None:
                sys.exit(f"bench_gptq printed no timing for {name}:\n{out}")
            tt, mt, Qt = torch_in_child(name, rows, n, args.threads, args.torch_reps, tmp)
            Qc = torch.from_numpy(np.fromfile(os.path.join(tmp, f"q_{name}.f32"), dtype="<f4").reshape(rows, n))
            # Same code ⇔ same dequantized value up to the last bits of the scale (1e-4 of a
            # 4-bit step is far below one step).
            same = 100.0 * float(((Qc - Qt).abs() <= 1e-5 * Qt.abs().max()).float().mean())
            print(f"  {name:>12} {tc:>10.4f} {tt:>10.4f} {tt / tc:>7.2f}x "
                  f"{rel_error(W, Qc, H):>11.4e} {rel_error(W, Qt, H):>11.4e} {same:>9.3f} "
                  f"{mc:>10.0f} {mt:>10.0f}")
            del W, H, Qt, Qc
            sys.stdout.flush()


def blas_coretype():
    """What kernels/cpu/blas_core.cpp makes qshard use on this CPU; Debian's torch 1.13 links
    the same OpenBLAS, which falls back to its SSE3 kernels on CPUs newer than it knows, so
    both sides get the same setting (before this, the torch side ran the SSE3 kernels)."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None


if __name__ == "__main__":
    core = blas_coretype()
    if core and "OPENBLAS_CORETYPE" not in os.environ:  # must be set before OpenBLAS loads
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, OPENBLAS_CORETYPE=core))
    if len(sys.argv) == 6 and sys.argv[1] == "--torch-child":
        torch_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
