#!/usr/bin/env python3
"""Cross-check tools/torch_llama.py against Hugging Face transformers on the golden cases.

For every case in tests/model/data/golden/ it loads the model with transformers
(LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM, fp32, eager and sdpa
attention), runs the golden tokens and reports the max |logit| difference against
golden.safetensors and against a live torch_llama forward.

Usage: .venv/bin/python tools/check_torch_llama_vs_transformers.py [--tol 1e-4]
Needs transformers (tested 4.44.2 with torch 1.13: pip install --no-deps
transformers==4.44.2 'tokenizers>=0.19,<0.20' 'huggingface-hub<0.30' regex tqdm
packaging filelock fsspec). Exit 0 pass, 1 fail, 77 transformers unavailable.
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import torch_llama  # noqa: E402


def case_model_dir(case_dir):
    p = os.path.join(case_dir, "model_dir.txt")
    if os.path.exists(p):
        with open(p) as f:
            return os.path.join(ROOT, f.read().strip())
    return case_dir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", default=os.path.join(ROOT, "tests", "model", "data", "golden"))
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    try:
        import transformers
        from transformers import AutoModelForCausalLM
    except Exception as e:  # noqa: BLE001
        print(f"SKIP: transformers unavailable: {e}")
        return 77
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"# torch {torch.__version__}  transformers {transformers.__version__}")
    print(f"# {'case':14s} {'class':20s} {'attn':6s} {'hf-vs-golden':>13s} {'hf-vs-live':>11s} "
          f"{'live-vs-golden':>15s}")
    ok = True
    for case in sorted(os.listdir(args.golden)):
        cdir = os.path.join(args.golden, case)
        if not os.path.isdir(cdir):
            continue
        if os.path.exists(os.path.join(cdir, "source.txt")):  # tools/make_arch_golden.py
            print(f"  {case:14s} golden made by transformers itself (source.txt), not torch_llama")
            continue
        g = torch_llama.read_safetensors(os.path.join(cdir, "golden.safetensors"))
        tokens, golden = g["tokens"].long(), g["logits"]
        mdir = case_model_dir(cdir)
        live = torch_llama.load_model(mdir)(tokens)
        d_live = float((live - golden).abs().max())
        for attn in ("eager", "sdpa"):
            try:
                hf = AutoModelForCausalLM.from_pretrained(mdir, torch_dtype=torch.float32,
                                                          attn_implementation=attn)
            except ImportError as e:      # sdpa needs torch >= 2.1.1
                print(f"  {case:14s} {'-':20s} {attn:6s} skipped ({str(e).splitlines()[0][:60]})")
                continue
            hf.eval()
            with torch.no_grad():
                out = hf(input_ids=tokens, use_cache=False).logits.float()
            d_gold = float((out - golden).abs().max())
            d_hf_live = float((out - live).abs().max())
            bad = max(d_gold, d_hf_live) > args.tol
            ok &= not bad
            print(f"  {case:14s} {type(hf).__name__:20s} {attn:6s} {d_gold:13.3e} {d_hf_live:11.3e} "
                  f"{d_live:15.3e}{'  FAIL' if bad else ''}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
