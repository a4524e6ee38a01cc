#!/usr/bin/env python3
"""`qshard eval` must agree with tools/torch_eval.py under the same protocol.

Env: QSHARD_BIN (qshard binary), QSHARD_TEST_MODEL (model dir with tokenizer.model and
text/eval.txt); optional QSHARD_SOURCE_DIR (repo root; default: two levels up).
For (seqlen, max-windows) in (256, 24) and (128, 10) runs
    $QSHARD_BIN eval --model M --text M/text/eval.txt --seqlen S --max-windows N --json --reference M
and tools/torch_eval.py with the same arguments, parses the last stdout line of each
as JSON and checks: equal `tokens` and `windows`; |ppl_q - ppl_t| / ppl_t < 1e-3;
qshard's kld_mean and kld_max against itself exactly 0 and top1_agree == 1.0.
A third run evaluates a noisy copy of the model (tools/perturb_model.py) against the
original: KLD mean/median/p99 must agree within 1e-3 relative, top-1 agreement within
two tokens (argmax ties may break differently).
Exit 0 pass, 1 fail, 77 skip (torch / numpy / sentencepiece not importable).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

RUNS = [(256, 24, False), (128, 10, False), (128, 10, True)]  # seqlen, max-windows, noisy
PPL_RTOL = 1e-3
KLD_RTOL = 1e-3


def last_json(stdout, who):
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{who}: no stdout")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise ValueError(f"{who}: last stdout line is not JSON: {lines[-1][:200]!r} ({e})")


def run(cmd, who):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{who} exited {p.returncode}: {' '.join(cmd)}\n"
                           f"--- stdout\n{p.stdout[-2000:]}\n--- stderr\n{p.stderr[-2000:]}")
    return last_json(p.stdout, who), dt


def fmt(v):
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def main():
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
        import sentencepiece  # noqa: F401
        import torch  # noqa: F401
    except Exception as e:  # noqa: BLE001
        print(f"SKIP: python {sys.executable} cannot import torch/numpy/sentencepiece/safetensors: {e}")
        return 77
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.environ.get("QSHARD_SOURCE_DIR") or os.path.dirname(os.path.dirname(here))
    qbin = os.environ.get("QSHARD_BIN") or os.path.join(src, "build", "qshard")
    model = os.environ.get("QSHARD_TEST_MODEL") or os.path.join(src, "models", "tiny-llama-gcide")
    torch_eval = os.path.join(src, "tools", "torch_eval.py")
    text = os.path.join(model, "text", "eval.txt")
    for p, what in ((qbin, "QSHARD_BIN"), (torch_eval, "tools/torch_eval.py"), (text, "eval text")):
        if not os.path.exists(p):
            print(f"FAIL: {what} not found: {p}")
            return 1

    failures = []
    tmp = tempfile.TemporaryDirectory(prefix="qshard-eval-")
    noisy = os.path.join(tmp.name, "noisy")
    subprocess.run([sys.executable, os.path.join(src, "tools", "perturb_model.py"), model, noisy,
                    "--scale", "0.05", "--seed", "1"], check=True)
    for seqlen, maxw, use_noisy in RUNS:
        args = ["--model", noisy if use_noisy else model, "--text", text, "--seqlen", str(seqlen),
                "--max-windows", str(maxw), "--json", "--reference", model]
        try:
            q, tq = run([qbin, "eval"] + args, "qshard eval")
            t, tt = run([sys.executable, torch_eval] + args, "torch_eval.py")
        except (RuntimeError, ValueError) as e:
            failures.append(f"seqlen {seqlen}: {e}")
            print(f"FAIL seqlen {seqlen}: {e}")
            continue
        bad = []
        for k in ("tokens", "windows"):
            if q.get(k) != t.get(k):
                bad.append(f"{k}: qshard {q.get(k)} != torch {t.get(k)}")
        pq, pt = q.get("ppl"), t.get("ppl")
        rel = None
        if not isinstance(pq, (int, float)) or not isinstance(pt, (int, float)) or pt <= 0:
            bad.append(f"ppl missing/invalid: qshard {pq} torch {pt}")
        else:
            rel = abs(pq - pt) / pt
            if not rel < PPL_RTOL:
                bad.append(f"ppl rel diff {rel:.3e} >= {PPL_RTOL}")
        if use_noisy:
            for k in ("kld_mean", "kld_median", "kld_p99"):
                a, b = q.get(k), t.get(k)
                if not (isinstance(a, float) and isinstance(b, float) and b > 0
                        and abs(a - b) <= KLD_RTOL * b):
                    bad.append(f"{k}: qshard {a} vs torch {b} (rel limit {KLD_RTOL})")
            if abs(q.get("top1_agree", -1) - t.get("top1_agree", 2)) * q.get("tokens", 0) > 2:
                bad.append(f"top1_agree: qshard {q.get('top1_agree')} vs torch {t.get('top1_agree')}")
        else:
            for k in ("kld_mean", "kld_max"):
                if q.get(k) != 0:
                    bad.append(f"qshard {k} vs itself = {q.get(k)} (want exactly 0)")
            if q.get("top1_agree") != 1.0:
                bad.append(f"qshard top1_agree vs itself = {q.get('top1_agree')} (want 1.0)")

        print(f"# {'noisy model' if use_noisy else 'model'} vs reference, seqlen {seqlen}, max-windows {maxw}: qshard {tq:.2f} s, torch {tt:.2f} s (wall)")
        print(f"# {'key':12s} {'qshard':>14s} {'torch':>14s}")
        for k in ("windows", "tokens", "ppl", "kld_mean", "kld_median", "kld_p99", "kld_max",
                  "top1_agree"):
            print(f"  {k:12s} {fmt(q.get(k)):>14s} {fmt(t.get(k)):>14s}")
        if rel is not None:
            print(f"  ppl rel diff {rel:.3e} (limit {PPL_RTOL})")
        for b in bad:
            print(f"  FAIL: {b}")
        failures += [f"seqlen {seqlen}: {b}" for b in bad]

    if failures:
        print(f"FAIL ({len(failures)} problem(s))")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
