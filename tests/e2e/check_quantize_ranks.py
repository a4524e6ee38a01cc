#!/usr/bin/env python3
"""`qshard quantize` under mpirun at 1, 2, 3 and 4 ranks on the tiny model (oversubscribed
on the CI's 2 cores), read back with the safetensors package and h5py.

Checks: every rank count gives the same tensor names, shapes and dtypes; >= 99.9% of the
integer codes identical to one rank's; KLD against the original within 1% of one rank's;
a rerun at the same rank count is byte-identical; the sharded output is what engines
expect (model-0000i-of-0000N.safetensors + model.safetensors.index.json naming every
tensor once, no temporaries left); the parallel-HDF5 export at 3 ranks holds the same
codes as one rank's; --export gguf (gptq: the Q4_K_M mix at 2 and 3 ranks, q4_0's
32-blocks at 3) writes a model.gguf byte-identical to one rank's and leaves no spool
behind; a failure on one rank ends every rank with a non-zero exit.
Kept small (--n-calib 32 --calib-seqlen 128; the gguf runs 8 x 64).
Env: QSHARD_BIN, QSHARD_TEST_MODEL.
Exit 0 pass, 1 fail, 77 skip (no safetensors/torch/h5py).
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from safetensors.torch import load_file
    import h5py
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, MPIRUN, calib_args, check, eval_args, verdict  # noqa: E402
CALIB = calib_args(32, 128)
EVAL = eval_args(128, 16)


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if expect_ok and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def quantize(out, np_, *args):
    return run(MPIRUN + ["-np", str(np_), QBIN, "quantize", "--model", MODEL, "--out", out, "--quiet"] + CALIB + list(args))


def load_dir(d):
    tensors = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            for k, v in load_file(os.path.join(d, f)).items():
                assert k not in tensors, f"{k} twice"
                tensors[k] = v
    return tensors


def codes(t, bits=4):
    """Unpacked GPTQ qweight codes (packed along in, LSB first)."""
    x = t.numpy().view(np.uint32)
    per = 32 // bits
    return np.stack([(x >> (bits * i)) & ((1 << bits) - 1) for i in range(per)], axis=1)


def digest(d):
    h = {}
    for f in sorted(os.listdir(d)):
        # times and memory; resume state; SHA256SUMS holds the report's checksum
        if f in ("quantize_report.json", ".qshard", "SHA256SUMS"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            h[f] = hashlib.sha256(fh.read()).hexdigest()
    return h


def main():
    tmp = tempfile.TemporaryDirectory(prefix="qshard-ranks-")
    t = tmp.name
    outs = {}
    for np_ in (1, 2, 3, 4):
        outs[np_] = os.path.join(t, f"np{np_}")
        quantize(outs[np_], np_, "--format", "int4", "--group-size", "128", "--export", "gptq")

    ref = load_dir(outs[1])
    ref_kld = json.loads(run([QBIN, "eval", "--model", outs[1], "--reference", MODEL] + EVAL).stdout.splitlines()[-1])
    check(ref_kld["kld_mean"] > 0, f"1 rank: KLD {ref_kld['kld_mean']:.5f} > 0")
    for np_ in (2, 3, 4):
        d = outs[np_]
        files = sorted(os.listdir(d))
        shards = [f for f in files if f.endswith(".safetensors")]
        check(all(f == f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, f in enumerate(shards)),
              f"{np_} ranks: shard names {shards}")
        leftovers = [f for f in files if (f.startswith(".") and f != ".qshard") or f.endswith(".tmp")]
        if os.path.isdir(os.path.join(d, ".qshard")):  # resume state: only the manifest stays
            leftovers += [".qshard/" + f for f in os.listdir(os.path.join(d, ".qshard")) if f != "manifest.json"]
        check(not leftovers, f"{np_} ranks: no temporaries ({leftovers})")
        if len(shards) > 1:
            with open(os.path.join(d, "model.safetensors.index.json")) as fh:
                index = json.load(fh)
            got = load_dir(d)
            check(sorted(index["weight_map"]) == sorted(got) and set(index["weight_map"].values()) == set(shards),
                  f"{np_} ranks: index names every tensor once, in existing shards")
        got = load_dir(d)
        check(sorted(got) == sorted(ref), f"{np_} ranks: same tensor names ({len(got)})")
        check(all(got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype for k in ref),
              f"{np_} ranks: same shapes and dtypes")
        same = total = 0
        for k in ref:
            if k.endswith(".qweight"):
                a, b = codes(ref[k]), codes(got[k])
                same += int((a == b).sum())
                total += a.size
        check(total > 0 and same / total >= 0.999, f"{np_} ranks: {same / total:.5%} of codes identical (>= 99.9%)")
        kld = json.loads(run([QBIN, "eval", "--model", d, "--reference", MODEL] + EVAL).stdout.splitlines()[-1])
        rel = abs(kld["kld_mean"] - ref_kld["kld_mean"]) / ref_kld["kld_mean"]
        check(rel <= 0.01, f"{np_} ranks: KLD {kld['kld_mean']:.6f} vs {ref_kld['kld_mean']:.6f} (within 1%)")
        with open(os.path.join(d, "quantize_report.json")) as fh:
            rep = json.load(fh)
        check(rep["ranks"] == np_ and len(rep["layers"]) > 0 and all(l["peak_rss_bytes"] > 0 for l in rep["layers"]),
              f"{np_} ranks: report has per-layer memory")
        check(all(l["comm_bytes"]["results"] > 0 and l["comm_bytes"]["weights"] > 0 for l in rep["layers"]),
              f"{np_} ranks: report counts weights and results bytes")

    again = os.path.join(t, "np2-again")
    quantize(again, 2, "--format", "int4", "--group-size", "128", "--export", "gptq")
    check(digest(again) == digest(outs[2]), "2 ranks twice: byte-identical files")

    # Parallel HDF5: one file written collectively by 3 ranks, the same codes as 1 rank.
    h1, h3 = os.path.join(t, "h1"), os.path.join(t, "h3")
    quantize(h1, 1, "--format", "int4", "--group-size", "128", "--export", "hdf5")
    quantize(h3, 3, "--format", "int4", "--group-size", "128", "--export", "hdf5")
    with h5py.File(os.path.join(h1, "model.h5"), "r") as a, h5py.File(os.path.join(h3, "model.h5"), "r") as b:
        mods = [k for k in a if k != "dense"]
        check(sorted(a) == sorted(b) and sorted(a["dense"]) == sorted(b["dense"]), "hdf5 3 ranks: same groups and datasets")
        same = total = 0
        for m in mods:
            x, y = a[m]["codes"][()], b[m]["codes"][()]
            same += int((x == y).sum())
            total += x.size
        check(total > 0 and same / total >= 0.999, f"hdf5 3 ranks: {same / total:.5%} of codes identical")
        dense_ok = all(np.array_equal(a["dense"][k][()], b["dense"][k][()]) for k in a["dense"])
        check(dense_ok, "hdf5 3 ranks: dense tensors identical")

    # GGUF: each rank spools the tensors it owns, rank 0 writes the one file.
    for fmt, counts in (("gguf:Q4_K_M", (1, 2, 3)), ("q4_0", (1, 3))):
        sums = {}
        for np_ in counts:
            d = os.path.join(t, f"gguf-{fmt.replace(':', '-')}-np{np_}")
            run(MPIRUN + ["-np", str(np_), QBIN, "quantize", "--model", MODEL, "--out", d, "--quiet"]
                + calib_args(8, 64) + ["--method", "gptq", "--format", fmt, "--export", "gguf"])
            with open(os.path.join(d, "model.gguf"), "rb") as fh:
                sums[np_] = hashlib.sha256(fh.read()).hexdigest()
            left = [f for f in os.listdir(d) if f.endswith(".partial") or f.endswith(".tmp")]
            check(not left, f"gguf {fmt} {np_} ranks: no spool or temporary left ({left})")
        check(all(sums[n] == sums[1] for n in counts),
              f"gguf {fmt}: model.gguf at {counts[1:]} ranks byte-identical to 1 rank's ({sums})")

    # An error on one rank (rank 0 refuses an --out that holds a finished checkpoint)
    # ends every rank: non-zero exit, no hang (subprocess timeout otherwise).
    p = run(MPIRUN + ["-np", "2", QBIN, "quantize", "--model", MODEL, "--out", outs[1], "--quiet"] + CALIB,
            expect_ok=False)
    check(p.returncode != 0 and "already holds a finished checkpoint" in p.stderr,
          f"error on rank 0 ends both ranks (exit {p.returncode})")

    return verdict()


if __name__ == "__main__":
    sys.exit(main())
