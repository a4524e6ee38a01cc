#!/usr/bin/env python3
"""Distributed quantize: per-layer time against rank count, and bytes communicated per
layer by kind, from the code's own accounting (the Communicator's counters, reported in
OUT/quantize_report.json) next to pipeline/traffic_model.h's formulas (bench_dist_traffic).

Runs `qshard quantize` (GPTQ int4 g128, gptq export) under mpirun at each --ranks count,
one OpenMP/BLAS thread per rank, on the bundled tiny model by default. On a 2-core machine
np 4 is oversubscribed (4 ranks time-share 2 cores): times there measure overhead, not
speed-up. Rank 0's per-layer times are reported (every rank waits for the others in the
collectives, so they agree to within the last layer's skew).

Usage: .venv/bin/python bench/bench_dist.py [--qshard build/qshard]
           [--traffic build/bench/bench_dist_traffic] [--ranks 1,2,4] [--n-calib 128]
           [--calib-seqlen 256] [--json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "pml", "ob1", "--mca", "btl", "self,vader",
          "-x", "OMP_NUM_THREADS=1", "-x", "OPENBLAS_NUM_THREADS=1"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qshard", default=os.path.join(ROOT, "build", "qshard"))
    ap.add_argument("--traffic", default=os.path.join(ROOT, "build", "bench", "bench_dist_traffic"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llama-gcide"))
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--calib-seqlen", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    m = a.model
    rows = []
    with tempfile.TemporaryDirectory(prefix="qshard-bench-dist-") as t:
        for n in [int(x) for x in a.ranks.split(",")]:
            out = os.path.join(t, f"np{n}")
            cmd = MPIRUN + ["-np", str(n), a.qshard, "quantize", "--model", m, "--out", out, "--calib",
                            os.path.join(m, "text", "calib.txt"), "--n-calib", str(a.n_calib), "--calib-seqlen",
                            str(a.calib_seqlen), "--format", "int4", "--group-size", "128", "--export", "gptq", "--quiet"]
            t0 = time.time()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            wall = time.time() - t0
            with open(os.path.join(out, "quantize_report.json")) as f:
                rep = json.load(f)
            layers = rep["layers"]
            mean = lambda key: sum(l["comm_bytes"][key] for l in layers) / len(layers)
            rows.append({"ranks": n, "wall_s": wall, "quantize_s": rep["seconds"],
                         "layer_s": sum(l["seconds"] for l in layers) / len(layers),
                         "peak_rss_mib": max(l["peak_rss_bytes"] for l in layers) / 2**20,
                         "statistics": mean("statistics"), "weights": mean("weights"), "results": mean("results"),
                         "control": mean("control")})
        model = {}
        if os.path.exists(a.traffic):
            p = subprocess.run([a.traffic, "--config", os.path.join(m, "config.json"), "--ranks", "2", "--json"],
                               check=True, stdout=subprocess.PIPE, text=True)
            model = json.loads(p.stdout.splitlines()[0])
    if a.json:
        print(json.dumps({"runs": rows, "model": model}))
        return 0
    base = rows[0]
    print(f"# {os.path.basename(m)}: GPTQ int4 g128, {a.n_calib} x {a.calib_seqlen} calibration tokens, "
          f"{os.cpu_count()} core(s), 1 thread per rank")
    print(f"# {'ranks':>5} {'layer_s':>9} {'x_np' + str(base['ranks']):>8} {'run_s':>8} {'wall_s':>8} {'peakRSS_MiB':>12}"
          f" {'stats_B':>10} {'weights_B':>10} {'results_B':>10} {'control_B':>10}")
    for r in rows:
        print(f"  {r['ranks']:>5} {r['layer_s']:>9.3f} {r['layer_s'] / base['layer_s']:>8.2f} {r['quantize_s']:>8.2f}"
              f" {r['wall_s']:>8.2f} {r['peak_rss_mib']:>12.1f} {r['statistics']:>10.0f} {r['weights']:>10.0f}"
              f" {r['results']:>10.0f} {r['control']:>10.0f}")
    if model:
        multi = [r for r in rows if r["ranks"] > 1]
        print(f"# traffic_model.h for this geometry: stats {model['statistics_payload']}  weights "
              f"{model['weights_payload']}  results {model['results_payload']} bytes per layer")
        for r in multi:
            ok = (r["statistics"] == model["statistics_payload"] and r["weights"] == model["weights_payload"]
                  and r["results"] == model["results_payload"])
            print(f"# np {r['ranks']}: counters {'==' if ok else '!='} model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
