#!/usr/bin/env python3
"""Engine load checks: qshard's exports loaded by the engines people run, on the tiny model.

For each case of GROUP: `qshard quantize` into the export, `qshard eval --tokens --json
--reference MODEL` of that checkpoint, then the engine loads the same directory and
tools/torch_eval.py's evaluate() computes ppl and KLD(reference || engine) from the engine's
logits on the same token windows (reference: the unquantized model in transformers, fp32).
ppl and kld_mean must agree within 1e-3 relative; a refused load or a mismatch fails.

  GROUP  compressed-tensors  transformers + compressed-tensors (W4A16 group/channel, sym/asym;
                             W8A8, W4A8 int-quantized)
         gptq                GPTQModel.load, BACKEND.TORCH (TorchLinear) (sym, asym, act-order)
         awq                 GPTQModel.load, BACKEND.AWQ_TORCH (AWQ GEMM layout)
         fakequant           transformers directly
Run with the engines venv's python (launch/engines_venv.sh; tests/engines/run.sh finds it).
Env: QSHARD_BIN, QSHARD_TEST_MODEL, QSHARD_SOURCE_DIR. Exit 0 pass, 1 fail.
"""
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("QSHARD_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "tools"))
import torch  # noqa: E402
import torch_eval  # noqa: E402  (the eval protocol: windows, NLL, KLD)

QBIN = os.environ.get("QSHARD_BIN") or os.path.join(SRC, "build", "qshard")
MODEL = os.environ.get("QSHARD_TEST_MODEL") or os.path.join(SRC, "models", "tiny-llama-gcide")
SEQLEN, WINDOWS = 128, 6  # a few windows: enough to see a wrong zero point or column order
CALIB = ["--calib", os.path.join(MODEL, "text", "calib.txt"), "--n-calib", "4",
         "--calib-seqlen", "128"]
RTOL = 1e-3
INT4_G128 = ["--format", "int4", "--group-size", "128"]

# name -> (qshard quantize args, loader)
CASES = {
    "compressed-tensors": [
        ("w4a16-g128-sym", INT4_G128 + ["--sym"], "transformers"),
        ("w4a16-g128-asym", INT4_G128 + ["--asym"], "transformers"),
        ("w4a16-channel-sym", ["--format", "int4", "--group-size", "-1", "--sym"], "transformers"),
        ("w4a16-channel-asym", ["--format", "int4", "--group-size", "-1", "--asym"], "transformers"),
        ("w8a8", ["--format", "int8", "--group-size", "-1", "--sym", "--act-format", "int8"],
         "transformers"),
        ("w4a8", INT4_G128 + ["--sym", "--act-format", "int8"], "transformers"),
    ],
    "gptq": [
        ("sym", INT4_G128 + ["--sym"], "gptqmodel"),
        ("asym", INT4_G128 + ["--asym"], "gptqmodel"),
        ("act-order", INT4_G128 + ["--sym", "--act-order"], "gptqmodel"),
        ("act-order-asym", INT4_G128 + ["--asym", "--act-order"], "gptqmodel"),
    ],
    "awq": [
        ("gemm", ["--method", "awq"] + INT4_G128 + ["--asym"], "gptqmodel-awq"),
    ],
    "fakequant": [
        ("int4-g128", INT4_G128, "transformers"),
    ],
}


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> exit {p.returncode}\n{p.stderr[-3000:]}")
    return p.stdout


def load_transformers(path):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu")
    return m.eval(), "transformers " + __import__("transformers").__version__


def load_gptqmodel(path, backend):
    import gptqmodel
    from gptqmodel import BACKEND, GPTQModel
    # The torch kernels take fp16/bf16 only at load; their dequantized weights follow the
    # input's dtype, so the model runs in fp32 afterwards like qshard eval (F16 scales
    # widen exactly).
    m = GPTQModel.load(path, device="cpu", backend=getattr(BACKEND, backend), dtype=torch.float16)
    hf = m.model.float().eval()
    kernels = sorted({type(mod).__name__ for mod in hf.modules()
                      if hasattr(mod, "qweight")})
    return hf, f"GPTQModel {gptqmodel.__version__} kernel {','.join(kernels)}"


LOADERS = {
    "transformers": load_transformers,
    "gptqmodel": lambda p: load_gptqmodel(p, "TORCH"),
    "gptqmodel-awq": lambda p: load_gptqmodel(p, "AWQ_TORCH"),
}


def vllm_int8_token(x):
    """vLLM's dynamic per-token int8 (dynamic_scaled_int8_quant): scale = absmax / 127,
    codes round-half-even(x * 127 / absmax) saturated to [-128, 127]; what qshard simulates."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    q = torch.clamp(torch.round(x * (127.0 / amax)), -128, 127)
    return torch.where(amax > 0, q * (amax / 127.0), torch.zeros_like(x))


@contextlib.contextmanager
def ct_input_quant(mode):
    """compressed-tensors' CPU forward fake-quantizes a Linear's input with its own
    calculate_qparams (scale = absmax / 127.5, the int8 range 255 over 2), not vLLM's
    absmax / 127. mode "engine" leaves it, "off" skips it, "vllm" swaps in vLLM's rule."""
    from compressed_tensors.quantization.lifecycle import forward as ctf
    orig = ctf.forward_quantize

    def patched(module, value, base_name, args):
        if base_name != "input":
            return orig(module, value, base_name, args)
        return value if mode == "off" else vllm_int8_token(value)
    if mode != "engine":
        ctf.forward_quantize = patched
    try:
        yield
    finally:
        ctf.forward_quantize = orig


def logits_fn(model):
    def f(x):
        with torch.no_grad():
            return model(input_ids=x).logits
    return f


def rel(a, b):
    return abs(a - b) / abs(b) if b else abs(a - b)


def check_case(group, name, args, loader, tmp, tokens, windows, ref):
    out = os.path.join(tmp, f"{group}-{name}")
    method = [] if "--method" in args else ["--method", "gptq"]
    export = "gptq" if group == "gptq" else group
    run([QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet", "--export", export]
        + method + args + CALIB)
    t0 = time.perf_counter()
    model, engine = LOADERS[loader](out)
    t_load = time.perf_counter() - t0
    # int-quantized (W8A8, W4A8): the weights alone (activation quantization off on both
    # sides), then with vLLM's activation rule in the engine against qshard's default;
    # the engine's own rule is printed, not compared (docs/engines.md).
    acts = [("", None, "engine")]
    if "--act-format" in args:
        acts = [(" weights only", "none", "off"), (" vLLM int8 acts", None, "vllm"),
                (" engine's own int8 acts (not compared)", None, "engine")]
    bad = []
    for label, qshard_act, mode in acts:
        q = json.loads(run([QBIN, "eval", "--model", out, "--tokens", tokens, "--seqlen",
                            str(SEQLEN), "--max-windows", str(WINDOWS), "--reference", MODEL,
                            "--json", "--quiet"]
                           + (["--act-format", qshard_act] if qshard_act else [])
                           ).strip().splitlines()[-1])
        with ct_input_quant(mode) if "--act-format" in args else contextlib.nullcontext():
            e = torch_eval.evaluate(logits_fn(model), windows, batch=WINDOWS, reference=ref)
        compared = "not compared" not in label
        miss = [f"{k}{label}: engine {e[k]:.6g} vs qshard {q[k]:.6g} (rel {rel(e[k], q[k]):.2e})"
                for k in ("ppl", "kld_mean") if compared and not rel(e[k], q[k]) <= RTOL]
        bad += miss
        print(f"{'FAIL' if miss else 'ok  ' if compared else 'info'} {group}/{name}{label}: "
              f"{engine}: ppl {e['ppl']:.5f} (qshard {q['ppl']:.5f}, rel "
              f"{rel(e['ppl'], q['ppl']):.1e}), kld_mean {e['kld_mean']:.5g} (qshard "
              f"{q['kld_mean']:.5g}, rel {rel(e['kld_mean'], q['kld_mean']):.1e}), top1 "
              f"{e['top1_agree']:.4f} (qshard {q['top1_agree']:.4f}); load {t_load:.1f} s",
              flush=True)
    return [f"{group}/{name}: {b}" for b in bad]


def main():
    groups = sys.argv[1:] or list(CASES)
    unknown = [g for g in groups if g not in CASES]
    if unknown:
        print(f"FAIL: unknown group(s) {unknown}; known: {list(CASES)}")
        return 1
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    tmp = tempfile.TemporaryDirectory(prefix="qshard-engines-")
    tokens = os.path.join(tmp.name, "eval.tokens")
    run([QBIN, "tokenize", "--model", MODEL, "--text", os.path.join(MODEL, "text", "eval.txt"),
         "--out", tokens, "--quiet"])
    windows = torch_eval.make_windows(torch_eval.read_tokens(tokens), SEQLEN, WINDOWS)
    ref = logits_fn(load_transformers(MODEL)[0])
    failures = []
    for g in groups:
        for name, args, loader in CASES[g]:
            try:
                failures += check_case(g, name, args, loader, tmp.name, tokens, windows, ref)
            except Exception as ex:  # noqa: BLE001  (a refused load is a finding: print it whole)
                msg = f"{g}/{name}: {type(ex).__name__}: {str(ex)[-1500:]}"
                print(f"FAIL {msg}", flush=True)
                failures.append(msg)
    if failures:
        print(f"FAIL ({len(failures)} problem(s))")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
