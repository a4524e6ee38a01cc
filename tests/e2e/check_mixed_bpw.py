"""--target-bpw (mixed precision to a bits-per-weight budget) on the tiny model: the plan
meets the budget and mixes formats; the report, the modules' formats and the GPTQ
export's `dynamic` agree with it; the same command gives the same bytes again, under
mpirun at 2 ranks, and when killed after a layer and resumed; a compressed-tensors export
of a mixed plan has one config group per format and evaluates in our reader (with a
--group-size that divides no module: the plan's formats are what is checked); a GGUF
export holds the plan's per-tensor types.""" 
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from check_resume import digest  # noqa: E402
from checklib import MODEL, MPIRUN, QBIN, attempt as run, check, finish  # noqa: E402

CALIB = os.path.join(MODEL, "text", "calib.txt")
EVAL = os.path.join(MODEL, "text", "eval.txt")


def quantize_cmd(out, extra):
    return [QBIN, "quantize", "--model", MODEL, "--out", out, "--calib", CALIB, "--n-calib", "16",
            "--calib-seqlen", "64", "--quiet"] + extra


def tensors(out):
    """sha256 of every tensor's bytes, whichever shard holds it (2 ranks write 2 shards)."""
    got = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".safetensors"):
            with open(os.path.join(out, name), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(n))
                data = f.read()
            for k, v in header.items():
                if k != "__metadata__":
                    b, e = v["data_offsets"]
                    got[k] = (v["dtype"], v["shape"], hashlib.sha256(data[b:e]).hexdigest())
    return got


def plan_of(out):
    return json.load(open(os.path.join(out, "quantize_report.json")))["bpw_plan"]


def check_plan(out, target, what):
    rep = json.load(open(os.path.join(out, "quantize_report.json")))
    plan = rep.get("bpw_plan", {})
    mods = plan.get("modules", [])
    check(len(mods) == 28, f"{what}: every decoder Linear planned ({len(mods)})")
    bits = plan.get("bits_per_weight", 99)
    check(target - 0.3 < bits <= target, f"{what}: {bits:.4f} bits per weight, within the budget {target} and near it")
    formats = {m["format"] for m in mods}
    check(len(formats) >= 2, f"{what}: the plan mixes formats {sorted(formats)}")
    used = {m["module"]: m["format"] for m in rep["modules"]}
    check(all(used.get(m["module"]) == m["format"] for m in mods), f"{what}: each module quantized as planned")
    return plan


def check_gguf(t):
    """GGUF per-tensor types from the plan; token_embd/output as the gguf: mix makes them;
    the linears' bits in the file (block bytes) within the budget."""
    import gguf  # noqa: E402 (the venv's gguf-py; only this part needs it)
    out = os.path.join(t, "gguf")
    r = run(quantize_cmd(out, ["--method", "rtn", "--target-bpw", "4.8", "--format", "gguf:Q4_K_M", "--export", "gguf"]))
    check(r.returncode == 0, f"gguf at --target-bpw 4.8 (rc {r.returncode} {r.stderr[-300:]})")
    if r.returncode != 0:
        return
    plan = check_plan(out, 4.8, "gguf")
    types = {t.name: (t.tensor_type.name.lower(), int(t.n_bytes), int(t.n_elements))
             for t in gguf.GGUFReader(os.path.join(out, "model.gguf")).tensors}
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    bits = weights = 0
    wrong = []
    for m in plan["modules"]:
        layer, slot = m["module"].split(".")[2], ".".join(m["module"].split(".")[3:])
        typ, nbytes, n = types.get(f"blk.{layer}.{names[slot]}.weight", ("?", 0, 0))
        if typ != m["format"].split()[0]:
            wrong.append((m["module"], m["format"], typ))
        bits, weights = bits + 8 * nbytes, weights + n
    check(not wrong, f"gguf: every Linear's type is the planned one (differs: {wrong[:3]})")
    check(weights and bits / weights <= 4.8 + 1e-9 and abs(bits / weights - plan["bits_per_weight"]) < 1e-9,
          f"gguf: the Linears' block bytes give the plan's {plan['bits_per_weight']:.4f} bits per weight")
    check(types.get("output.weight", ("?",))[0] == "q6_k" and types.get("token_embd.weight", ("?",))[0] == "q4_k",
          "gguf: output Q6_K and token_embd Q4_K, as llama.cpp's Q4_K_M makes them")


def main():
    t = tempfile.mkdtemp(prefix="qshard-mixed-bpw-")
    try:
        gptq = ["--target-bpw", "4.0", "--asym"]
        ref = os.path.join(t, "ref")
        r = run(quantize_cmd(ref, gptq))
        check(r.returncode == 0, f"gptq export at --target-bpw 4.0 (rc {r.returncode} {r.stderr[-300:]})")
        check("# --target-bpw 4: " in r.stdout, "the plan table is printed")
        plan = check_plan(ref, 4.0, "gptq")
        qc = json.load(open(os.path.join(ref, "quantize_config.json")))
        base = f"int{qc['bits']} g{qc['group_size']} asym"
        others = sorted(m["module"] for m in plan["modules"] if m["format"] != base)
        dyn = sorted(k[3:-1].replace("\\.", ".") for k in qc.get("dynamic", {}) if k.startswith("+:"))
        check(others and dyn == others, f"GPTQModel dynamic lists every module off the base {base} ({len(dyn)})")
        want = digest(ref)

        again = os.path.join(t, "again")
        run(quantize_cmd(again, gptq))
        got = digest(again)
        check(got == want, "the same command again: identical output and plan")

        if shutil.which("mpirun"):
            two = os.path.join(t, "np2")
            r = run(MPIRUN + ["-np", "2"] + quantize_cmd(two, gptq))
            check(r.returncode == 0, f"2 ranks (rc {r.returncode} {r.stderr[-300:]})")
            a, b = tensors(ref), tensors(two)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            check(len(a) > 100 and not diff, f"2 ranks: every tensor byte-identical to 1 rank's (differs: {diff[:5]})")
            check(plan_of(two) == plan_of(ref), "2 ranks: the same plan as 1 rank")

        resumed = os.path.join(t, "resumed")
        r = run(quantize_cmd(resumed, gptq), {"QSHARD_TEST_KILL_AT": "layer-1"})
        check(r.returncode == -9, f"killed after layer 1 (rc {r.returncode})")
        r = run(quantize_cmd(resumed, gptq))
        check(r.returncode == 0 and digest(resumed) == want, "killed and resumed: identical output and plan")

        ct = os.path.join(t, "ct")
        # --group-size 96 divides no module: with a plan, --format's group size is not used.
        r = run(quantize_cmd(ct, ["--target-bpw", "4.6", "--export", "compressed-tensors", "--group-size", "96"]))
        check(r.returncode == 0, f"compressed-tensors at --target-bpw 4.6 (rc {r.returncode} {r.stderr[-300:]})")
        plan = check_plan(ct, 4.6, "compressed-tensors")
        groups = json.load(open(os.path.join(ct, "config.json")))["quantization_config"]["config_groups"]
        check(len(groups) == len({m["format"] for m in plan["modules"]}),
              f"one config group per planned format ({len(groups)})")
        r = run([QBIN, "eval", "--model", ct, "--reference", MODEL, "--text", EVAL, "--seqlen", "64",
                 "--max-windows", "8", "--json", "--quiet"])
        res = json.loads(r.stdout.splitlines()[-1]) if r.returncode == 0 else {}
        check(0 < res.get("kld_mean", -1) < 0.05, f"the mixed compressed-tensors export evaluates (KLD {res.get('kld_mean')})")
        check_gguf(t)
    finally:
        shutil.rmtree(t, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
