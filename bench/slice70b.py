#!/usr/bin/env python3
"""70B geometry on the CPU in slices: `qshard quantize` of an N-layer synthetic checkpoint
with Llama-3-70B's exact shapes (tools/make_synthetic_checkpoint.py), per layer and per
phase, peak RSS, bytes read and written, beside a plain sequential read of the same files.

For each --layers N: writes the checkpoint under --workdir (kept with --keep), reads its
shards once sequentially after dropping them from the page cache (posix_fadvise
DONTNEED, per file: nothing else's cache is touched), then for each --methods M drops
them again and runs `/usr/bin/time -v qshard quantize --device cpu` (int4 g128, gptq
export, --n-calib x --calib-seqlen random ids). Tables: per layer and phase
(quantize_report.json's phase_seconds; read_thread is the reader thread's copy of the
next layer, overlapped), and per run: wall, peak RSS, file-system bytes in/out
(getrusage) and their GB/s over the wall time. With --rerun, gptq runs a second time
with QSHARD_SEQUENTIAL_RERUN=1 (true-sequential by re-running the layer per group, the
path before pipeline/staged_layer.h): forward seconds side by side, and the outputs must
be byte-identical.

Usage: .venv/bin/python bench/slice70b.py [--qshard build/qshard] [--layers 2,4]
           [--methods gptq,awq-joint] [--n-calib 8] [--calib-seqlen 512] [--rerun]
           [--geometry llama3-70b] [--workdir /tmp] [--keep] [--verbose] [--json]
A 70B layer's GPTQ is ~30 TFLOP (down_proj's 28672² Cholesky and inverse alone ~20):
minutes per layer on a few cores; docs/results.md has the measured numbers.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ["read", "broadcast", "forward", "hessian", "allreduce", "fit", "error_report", "export"]


def drop_cache(files):
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read(files):
    """Seconds to read `files` once, 16 MiB at a time, after dropping them from the cache."""
    drop_cache(files)
    buf = bytearray(16 << 20)
    total, t0 = 0, time.time()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                total += n
    return total, time.time() - t0


def checkpoint(a, layers):
    d = os.path.join(a.workdir, f"slice70b-{a.geometry}-{layers}l")
    if not os.path.isfile(os.path.join(d, "model.safetensors.index.json")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_synthetic_checkpoint.py"),
                        "--geometry", a.geometry, "--layers", str(layers), "--out", d,
                        "--calib-tokens", str(a.n_calib * a.calib_seqlen)], check=True)
    return d


def run_quantize(a, model, method, out, env_extra=None):
    shutil.rmtree(out, ignore_errors=True)
    drop_cache(sorted(glob.glob(os.path.join(model, "*.safetensors"))))
    fmt = ["--format", "int4", "--group-size", "128"] + (["--asym"] if method.startswith("awq") else [])
    cmd = ["/usr/bin/time", "-v", a.qshard, "quantize", "--model", model, "--calib",
           os.path.join(model, "calib.tokens"), "--n-calib", str(a.n_calib), "--calib-seqlen",
           str(a.calib_seqlen), "--method", method, *fmt, "--export", "gptq", "--out", out, "--device", "cpu"]
    if a.verbose:
        cmd.append("--verbose")
    env = dict(os.environ, **(env_extra or {}))
    log = out + ".log"  # streamed: a long run can be followed (tail -f) and read if cut short
    t0 = time.time()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    text = open(log).read()
    if p.returncode != 0:
        sys.exit(f"slice70b: {' '.join(cmd)} failed:\n{text[-3000:]}")

    def field(name):
        m = re.search(rf"{name}: (\d+)", text)
        return int(m.group(1)) if m else 0
    rep = json.load(open(os.path.join(out, "quantize_report.json")))
    written = sum(os.path.getsize(f) for f in glob.glob(os.path.join(out, "*")))
    return {"method": method, "rerun": bool(env_extra), "wall_s": wall, "seconds": rep["seconds"],
            "peak_rss_gib": field("Maximum resident set size \\(kbytes\\)") / 2**20,
            "fs_read_gb": field("File system inputs") * 512 / 1e9,
            "fs_written_gb": field("File system outputs") * 512 / 1e9, "out_bytes_gb": written / 1e9,
            "layers": rep["layers"]}


def same_outputs(d1, d2):
    f1 = sorted(os.path.basename(f) for f in glob.glob(os.path.join(d1, "*.safetensors")))
    return f1 and all(subprocess.run(["cmp", "-s", os.path.join(d1, f), os.path.join(d2, f)]).returncode == 0
                      for f in f1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--geometry", default="llama3-70b")
    ap.add_argument("--layers", default="2,4")
    ap.add_argument("--methods", default="gptq,awq-joint")
    ap.add_argument("--n-calib", type=int, default=8)
    ap.add_argument("--calib-seqlen", type=int, default=512)
    ap.add_argument("--rerun", action="store_true", help="gptq also with QSHARD_SEQUENTIAL_RERUN=1")
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs")
    ap.add_argument("--verbose", action="store_true", help="qshard --verbose (per-module GPTQ times in OUT.log)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    results = []
    for n in [int(x) for x in a.layers.split(",")]:
        model = checkpoint(a, n)
        shards = sorted(glob.glob(os.path.join(model, "*.safetensors")))
        nbytes, secs = sequential_read(shards)
        print(f"# {a.geometry}, {n} layers: plain sequential read of {nbytes / 1e9:.2f} GB in {secs:.1f} s "
              f"= {nbytes / 1e9 / secs:.2f} GB/s (page cache dropped)", flush=True)
        runs = [(m, None) for m in a.methods.split(",")]
        if a.rerun and "gptq" in a.methods.split(","):
            runs.append(("gptq", {"QSHARD_SEQUENTIAL_RERUN": "1"}))
        outs = {}
        for method, env in runs:
            out = os.path.join(a.workdir, f"slice70b-out-{n}l-{method}{'-rerun' if env else ''}")
            r = run_quantize(a, model, method, out, env)
            r.update(layers_in_model=n, plain_read_gbps=nbytes / 1e9 / secs, model_gb=nbytes / 1e9)
            outs[(method, bool(env))] = out
            results.append(r)
            tag = method + (" (rerun)" if env else "")
            print(f"# {tag}: {n} layers, {a.n_calib} x {a.calib_seqlen} tokens")
            print(f"  {'layer':>5} {'seconds':>8} " + " ".join(f"{p:>12}" for p in PHASES) +
                  f" {'read_thread':>12} {'peak_GiB':>9}")
            for l in r["layers"]:
                ph = l["phase_seconds"]
                print(f"  {l['layer']:>5} {l['seconds']:>8.1f} " + " ".join(f"{ph[p]:>12.2f}" for p in PHASES) +
                      f" {ph['read_thread']:>12.2f} {l['peak_rss_bytes'] / 2**30:>9.2f}")
            tail = r["seconds"] - sum(l["seconds"] for l in r["layers"])
            print(f"  run: {r['wall_s']:.1f} s wall ({tail:.1f} s outside the layers: embedding, head, "
                  f"writing), peak RSS {r['peak_rss_gib']:.2f} GiB, read {r['fs_read_gb']:.2f} GB "
                  f"({r['fs_read_gb'] / r['wall_s']:.3f} GB/s), written {r['fs_written_gb']:.2f} GB "
                  f"({r['fs_written_gb'] / r['wall_s']:.3f} GB/s), output {r['out_bytes_gb']:.2f} GB", flush=True)
        if ("gptq", True) in outs:
            same = same_outputs(outs[("gptq", False)], outs[("gptq", True)])
            new = [l["phase_seconds"]["forward"] for r in results[-len(runs):] if not r["rerun"] and r["method"] == "gptq"
                   for l in r["layers"]]
            old = [l["phase_seconds"]["forward"] for r in results[-len(runs):] if r["rerun"] for l in r["layers"]]
            print("# forward seconds per layer, staged / rerun: " +
                  ", ".join(f"{x:.1f} / {y:.1f} ({y / x:.2f}x)" for x, y in zip(new, old)) +
                  f"; outputs {'identical' if same else 'DIFFER'}")
            if not same:
                sys.exit("slice70b: staged and rerun outputs differ")
        if not a.keep:
            shutil.rmtree(model, ignore_errors=True)
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
