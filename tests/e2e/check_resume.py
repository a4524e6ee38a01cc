"""A quantize run killed at any moment (SIGKILL: no cleanup runs) resumes when the same
command is run again, and writes exactly the bytes of an uninterrupted run (sha256 of
every output file; quantize_report.json compared without its timings). Kill points are
made deterministic by QSHARD_TEST_KILL_AT (src/core/test_hooks.h); one kill lands at a
random moment. A different command on a half-done directory is refused in one line.
Under mpirun -np 2, one rank is paused at a named point and killed from outside with
kill -9 while the other waits in a collective; mpirun takes the rest down, and the rerun matches a 2-rank reference."""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import MODEL, MPIRUN, QBIN, attempt as run, check, verdict  # noqa: E402


def quantize_cmd(out, extra):
    return [QBIN, "quantize", "--model", MODEL, "--out", out, "--calib",
            os.path.join(MODEL, "text", "calib.txt"), "--n-calib", "16", "--calib-seqlen", "128",
            "--quiet"] + extra


def digest(out):
    """sha256 of every output file (not the .qshard bookkeeping); the report without timings."""
    files = {}
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        if name == "quantize_report.json":
            rep = json.load(open(path))
            rep.pop("seconds", None)
            rep.pop("layers", None)  # per-layer time, memory and bytes of the layers this run computed
            for m in rep.get("modules", []):
                m.pop("seconds", None)
            files[name] = json.dumps(rep, sort_keys=True)
        elif name == "SHA256SUMS":  # every line but the report's (its timings differ)
            files[name] = [l for l in open(path).read().splitlines() if not l.endswith("  quantize_report.json")]
        else:
            files[name] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return files


def same_as(reference, out, what):
    got = digest(out)
    diff = sorted(k for k in set(reference) | set(got) if reference.get(k) != got.get(k))
    check(not diff, f"{what}: output identical to the uninterrupted run" + (f" (differs: {diff})" if diff else ""))


def main():
    t = tempfile.mkdtemp(prefix="qshard-resume-")
    try:
        configs = {
            "gptq": ["--asym", "--act-order"],  # zeros and g_idx recorded too
            "hdf5": ["--export", "hdf5", "--quantize-lm-head"],  # lm_head in the tail segment
            "fakequant": ["--export", "fakequant", "--method", "rtn", "--skip", "mlp.down_proj"],
            # Folded norms recorded; the next layer is fed the unquantized output (AutoAWQ).
            "awq": ["--export", "fakequant", "--method", "awq", "--asym"],
            # Fitted ranges kept as GPTQ's groups; the quantized output carries h.
            "awq-joint+gptq": ["--method", "awq-joint+gptq", "--asym"],
            # One file from tensors spooled in OUT as they arrive; K-quant super-block scales
            # recorded; the mix's embeddings and output quantized at finish.
            "gguf": ["--export", "gguf", "--method", "rtn", "--format", "gguf:Q4_K_M"],
        }
        refs = {}
        durations = {}
        for name, extra in configs.items():
            out = os.path.join(t, "ref-" + name)
            t0 = time.monotonic()
            p = run(quantize_cmd(out, extra))
            durations[name] = time.monotonic() - t0
            check(p.returncode == 0, f"reference {name}: rc {p.returncode} {p.stderr.strip()[-300:]}")
            refs[name] = digest(out)
            check(os.path.exists(os.path.join(out, "config.json")), f"reference {name} finished")
            check(sorted(os.listdir(os.path.join(out, ".qshard"))) == ["manifest.json"],
                  f"{name}: only the manifest stays in .qshard after a finish")

        points = ["layer-0-file", "layer-1", "layer-2", "layer-3-file", "tail", "export", "finished"]
        for name, extra in configs.items():
            for point in points if name == "gptq" else ["layer-1", "export"]:
                out = os.path.join(t, f"{name}-{point}")
                p = run(quantize_cmd(out, extra), {"QSHARD_TEST_KILL_AT": point})
                check(p.returncode == -signal.SIGKILL, f"{name}: killed at {point} (rc {p.returncode})")
                check(not os.path.exists(os.path.join(out, "config.json")) or point == "finished",
                      f"{name}: killed at {point}: nothing looks finished")
                p = run(quantize_cmd(out, extra))
                check(p.returncode == 0, f"{name}: rerun after a kill at {point}: rc {p.returncode} "
                                         f"{p.stderr.strip()[-300:]}")
                same_as(refs[name], out, f"{name} killed at {point}")
                if name == "gguf":  # the killed run's spool is not left behind
                    left = [f for f in os.listdir(out) if f.endswith(".partial") or f.endswith(".tmp")]
                    check(not left, f"gguf killed at {point}: no spool or temporary after the rerun ({left})")

        # Killed twice in a row, at different layers.
        out = os.path.join(t, "twice")
        run(quantize_cmd(out, configs["gptq"]), {"QSHARD_TEST_KILL_AT": "layer-0"})
        run(quantize_cmd(out, configs["gptq"]), {"QSHARD_TEST_KILL_AT": "layer-2"})
        p = run(quantize_cmd(out, configs["gptq"]))
        check(p.returncode == 0, "rerun after two kills")
        same_as(refs["gptq"], out, "killed twice")

        # A random moment (the seed is printed so a failure can be replayed).
        seed = int(os.environ.get("QSHARD_RESUME_SEED", random.randrange(1 << 30)))
        rng = random.Random(seed)
        for i in range(3):
            out = os.path.join(t, f"random-{i}")
            delay = rng.uniform(0.05, max(0.1, durations["gptq"]))
            proc = subprocess.Popen(quantize_cmd(out, configs["gptq"]), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            p = run(quantize_cmd(out, configs["gptq"]))
            check(p.returncode == 0, f"rerun after a kill at {delay:.3f} s (seed {seed}): rc {p.returncode}")
            same_as(refs["gptq"], out, f"killed at {delay:.3f} s (seed {seed})")

        # A damaged checkpoint file is redone, not trusted.
        out = os.path.join(t, "damaged")
        run(quantize_cmd(out, configs["gptq"]), {"QSHARD_TEST_KILL_AT": "layer-2"})
        with open(os.path.join(out, ".qshard", "layer-00001.safetensors"), "r+b") as f:
            f.seek(-3, os.SEEK_END)
            f.write(b"xyz")
        p = run(quantize_cmd(out, configs["gptq"]))
        check(p.returncode == 0 and "layer-00001.safetensors does not match its checksum" in p.stderr,
              f"damaged checkpoint file: redone with a warning ({p.stderr.strip()[:200]})")
        same_as(refs["gptq"], out, "damaged checkpoint file")

        # A different command on a half-done directory: one line naming the difference.
        out = os.path.join(t, "mismatch")
        run(quantize_cmd(out, configs["gptq"]), {"QSHARD_TEST_KILL_AT": "layer-1"})
        p = run(quantize_cmd(out, ["--asym"]))
        lines = p.stderr.strip().splitlines()
        check(p.returncode == 2 and len(lines) == 1 and "--act-order was set, now (absent)" in lines[0]
              and "--overwrite" in lines[0], f"different command refused: rc {p.returncode} {lines}")
        cmd = quantize_cmd(out, configs["gptq"])
        cmd[cmd.index("--n-calib") + 1] = "8"
        p = run(cmd)
        check(p.returncode == 2 and "--n-calib was 16, now 8" in p.stderr, f"n-calib difference named: {p.stderr.strip()}")
        # A changed input file is named too.
        # A model file changed under the same --model path (the path itself is in the plan
        # too: quantize_report.json records it).
        model2 = os.path.join(t, "model-copy")
        shutil.copytree(MODEL, model2)
        out2 = os.path.join(t, "mismatch-model")
        cmd = quantize_cmd(out2, configs["gptq"])
        cmd[cmd.index(MODEL)] = model2
        run(cmd, {"QSHARD_TEST_KILL_AT": "layer-0"})
        with open(os.path.join(model2, "tokenizer_config.json"), "a") as f:
            f.write("\n")
        p = run(cmd)
        check(p.returncode == 2 and "model file tokenizer_config.json was" in p.stderr,
              f"changed model file named: {p.stderr.strip()}")
        p = run(quantize_cmd(out, ["--asym", "--overwrite"]))
        check(p.returncode == 0, "--overwrite discards the other run")
        p = run(quantize_cmd(os.path.join(t, "ref-gptq"), configs["gptq"]))
        check(p.returncode == 0 and "nothing to do" in p.stdout, f"same command on a finished OUT: no-op ({p.stdout.strip()})")
        p = run(quantize_cmd(os.path.join(t, "ref-gptq"), ["--asym"]))
        check(p.returncode == 2 and "already holds" in p.stderr and "--act-order" in p.stderr,
              f"different command on a finished OUT refused ({p.stderr.strip()})")

        # Two ranks; rank 1 is killed from outside while rank 0 waits for it.
        if shutil.which("mpirun"):
            ref2 = os.path.join(t, "mpi-ref")
            p = run(MPIRUN + ["-np", "2"] + quantize_cmd(ref2, configs["gptq"]))
            check(p.returncode == 0, f"2-rank reference: rc {p.returncode} {p.stderr.strip()[-300:]}")
            mpi_ref = digest(ref2)
            # Rank 1 after layer 1; rank 0 (the writer) between layer 2's file and the manifest.
            for point, rank in [("layer-1", "1"), ("layer-2-file", "0")]:
                out = os.path.join(t, "mpi-" + point)
                env = dict(os.environ, QSHARD_TEST_PAUSE_AT=point, QSHARD_TEST_KILL_RANK=rank)
                proc = subprocess.Popen(MPIRUN + ["-np", "2"] + quantize_cmd(out, configs["gptq"]),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                pid = None
                for line in proc.stderr:
                    m = re.search(r"paused at \S+ pid (\d+)", line)
                    if m:
                        pid = int(m.group(1))
                        break
                check(pid is not None, f"2 ranks: rank {rank} paused at {point}")
                if pid:
                    os.kill(pid, signal.SIGKILL)
                proc.stderr.read()
                rc = proc.wait()
                check(rc != 0, f"2 ranks: mpirun ends after rank {rank} is killed at {point} (rc {rc})")
                check(not os.path.exists(os.path.join(out, "config.json")), "2 ranks: nothing looks finished")
                p = run(MPIRUN + ["-np", "2"] + quantize_cmd(out, configs["gptq"]))
                check(p.returncode == 0, f"2 ranks: rerun after the kill at {point}: rc {p.returncode} {p.stderr.strip()[-300:]}")
                same_as(mpi_ref, out, f"2 ranks, rank {rank} killed at {point}")
            # The rank count is part of the plan.
            out = os.path.join(t, "mpi-ranks")
            run(MPIRUN + ["-np", "2"] + quantize_cmd(out, configs["gptq"]), {"QSHARD_TEST_KILL_AT": "layer-1"})
            p = run(quantize_cmd(out, configs["gptq"]))
            check(p.returncode == 2 and "ranks was 2, now 1" in p.stderr, f"rank count difference named: {p.stderr.strip()}")
    finally:
        shutil.rmtree(t, ignore_errors=True)
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
