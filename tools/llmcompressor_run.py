#!/usr/bin/env python3
"""llm-compressor (a peer quantizer) on a Hugging Face Llama directory, calibrated on an int32
token file cut exactly as `qshard quantize --calib FILE.tokens` cuts it (consecutive,
non-overlapping windows from the start, no shuffling), saved as compressed-tensors, which
`qshard eval` reads. Runs in the engines venv (launch/engines_venv.sh), on the CPU.

    $(launch/engines_venv.sh --python) tools/llmcompressor_run.py --modifier gptq|awq \
        --model DIR --calib calib.tokens --n-calib 128 --seqlen 256 --group-size 128 --out OUT
Scheme: int4 asymmetric, groups of --group-size along the input (W4A16_ASYM with that group
size), lm_head left alone; GPTQModifier with its defaults (dampening_frac 0.01, block 128,
actorder static), AWQModifier with its Llama mappings.
"""
import argparse
import os
import shutil

import numpy as np
import torch


def scheme(group_size):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    w = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group",
                         group_size=group_size)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=w)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modifier", choices=["gptq", "awq"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True, help="int32 little-endian token file")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.awq import AWQModifier
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    ids = np.fromfile(a.calib, dtype="<i4")
    if ids.size < a.n_calib * a.seqlen:
        raise SystemExit(f"{a.calib}: {ids.size} tokens, fewer than {a.n_calib} x {a.seqlen}")
    windows = ids[:a.n_calib * a.seqlen].reshape(a.n_calib, a.seqlen).astype(np.int64)
    ds = Dataset.from_dict({"input_ids": windows.tolist(),
                            "attention_mask": np.ones_like(windows).tolist()})
    cfg = scheme(a.group_size)
    mod = (GPTQModifier(config_groups=cfg, ignore=["lm_head"]) if a.modifier == "gptq"
           else AWQModifier(config_groups=cfg, ignore=["lm_head"]))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype="auto")
    oneshot(model=model, dataset=ds, recipe=[mod], num_calibration_samples=a.n_calib,
            max_seq_length=a.seqlen, shuffle_calibration_samples=False)
    model.save_pretrained(a.out, save_compressed=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                 "special_tokens_map.json"):
        if os.path.exists(os.path.join(a.model, name)):
            shutil.copy(os.path.join(a.model, name), a.out)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    if not torch.cuda.is_available():
        # AWQModifier pins its cached activations (pipelines/cache.py, _pin_intermediate),
        # which raises "Found no NVIDIA driver" on a CPU-only torch; pinning only speeds up
        # host-to-GPU copies, so on the CPU it can be the identity.
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    main()
