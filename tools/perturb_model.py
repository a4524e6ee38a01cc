#!/usr/bin/env python3
"""Copy a model directory with seeded relative Gaussian noise on every float weight.

Gives tests a second model with the same vocabulary whose KL divergence against the
original is non-trivial:  perturb_model.py SRC DST [--scale 0.05] [--seed 1]
"""
import argparse
import os
import shutil

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--scale", type=float, default=0.05, help="noise std relative to each tensor's std")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.dst, exist_ok=True)
    for f in os.listdir(a.src):
        p = os.path.join(a.src, f)
        if os.path.isfile(p) and not f.endswith(".safetensors") and not f.endswith(".index.json"):
            shutil.copy(p, a.dst)
    gen = torch.Generator().manual_seed(a.seed)
    tensors = load_file(os.path.join(a.src, "model.safetensors"))
    out = {}
    for name in sorted(tensors):
        t = tensors[name].float()
        noise = torch.randn(t.shape, generator=gen) * (t.std() if t.numel() > 1 else 1.0) * a.scale
        out[name] = (t + noise).to(tensors[name].dtype)
    save_file(out, os.path.join(a.dst, "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
