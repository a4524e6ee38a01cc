"""Every option of `qshard quantize --help` is in the resume identity: a run killed after
one layer, rerun with that one option changed, is refused in one line naming the option
with its recorded and its new value, exactly (floats one ulp apart are told apart).

The option list is read from --help, so an option added later fails this test until it
is given a changed value in CHANGES, or a reason in EXEMPT. One killed run is made and
copied for every option (the refusal comes before any layer is computed)."""
import json
import os
import re
import shutil
import sys
import tempfile
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import QBIN, MODEL, attempt as run, check, finish  # noqa: E402

CALIB = os.path.join(MODEL, "text", "calib.txt")

# Options that cannot change a byte of the output (src/cli/quantize_plan.cpp, kIgnored).
EXEMPT = {
    "out": "where to write, not what (it is the directory being resumed)",
    "overwrite": "the documented way to discard a run of a different command",
    "quiet": "progress on stderr only",
    "verbose": "debug lines on stderr only",
    "device": "recorded as resolved (plan key 'device', checked below); CI has only the cpu",
}


def base_cmd(out):
    return [QBIN, "quantize", "--model", MODEL, "--out", out, "--calib", CALIB, "--n-calib", "16",
            "--calib-seqlen", "64", "--quiet"]


def help_options():
    r = run([QBIN, "quantize", "--help"])
    # Boost.Program_options: "  --name arg (=default)   description"; wrapped lines are
    # indented further.
    return [m.group(1) for m in re.finditer(r"^  --([a-z0-9][a-z0-9-]*)", r.stdout, re.M)]


def changes(t):
    """option -> (extra args, plan key, expected new value or None when it is a file identity)."""
    model2 = os.path.join(t, "model-copy")
    shutil.copytree(MODEL, model2)
    calib2 = os.path.join(t, "calib2.txt")
    with open(CALIB, encoding="utf-8") as f:
        text = f.read()
    with open(calib2, "w", encoding="utf-8") as f:
        f.write(text[len(text) // 2:])
    recipe = os.path.join(t, "recipe.json")
    with open(recipe, "w") as f:
        json.dump({"rules": [{"match": "down_proj", "skip": True}]}, f)

    def value(opt, v):
        return opt, ([f"--{opt}", v], f"--{opt}", v)

    def flag(opt):
        return opt, ([f"--{opt}"], f"--{opt}", "set")

    return dict([
        ("model", (["--model", model2], "--model", model2)),
        ("calib", (["--calib", calib2], "--calib file", None)),
        ("recipe", (["--recipe", recipe], "--recipe file", None)),
        value("method", "rtn"),
        value("awq-grid", "10"),
        value("awq-loss", "block"),
        flag("no-awq-clip"),
        value("awq-propagate", "fp"),
        value("joint-range-sweeps", "3"),
        value("joint-rounding-sweeps", "5"),
        value("joint-damp", "0.1000001"),  # float: the next representable values are 7e-9 apart
        value("joint-damp-per-dim", "0.50000006"),  # one float ulp above 0.5
        value("smooth-alpha", "0.5000000000000001"),  # one double ulp above 0.5
        value("max-flip-percent", "1.5"),
        value("knee-tolerance", "0.25"),
        value("format", "int8"),
        value("group-size", "64"),
        flag("sym"),
        flag("asym"),
        flag("act-order"),
        flag("static-groups"),
        value("damp", "0.010000000000000002"),  # one double ulp above 0.01
        value("block-size", "64"),
        value("block-gptq", "microblock"),
        flag("mse-clip"),
        value("n-calib", "8"),
        value("calib-seqlen", "32"),
        value("calib-shuffle", "7"),
        value("export", "compressed-tensors"),
        # gptq does not store activation formats: fakequant does; --act-format sorts first.
        ("act-format", (["--act-format", "int8", "--export", "fakequant"], "--act-format", "int8")),
        ("skip", (["--skip", "mlp.down_proj"], "--skip", '["mlp.down_proj"]')),
        flag("quantize-lm-head"),
        flag("no-true-sequential"),
        value("moe-min-tokens", "8"),
        value("moe-starved", "routed"),
        value("batch-tokens", "1024"),
        value("max-shard-size", "0.004"),
        value("gguf-dense", "f16"),
        value("target-bpw", "4.5"),
        value("bpw-kld-windows", "3"),
        # --bpw-formats needs --target-bpw; the plan's first difference is --bpw-formats.
        ("bpw-formats", (["--bpw-formats", "int4:g64,int8:g128", "--target-bpw", "5"], "--bpw-formats",
                         "int4:g64,int8:g128")),
    ])


def main():
    t = tempfile.mkdtemp(prefix="qshard-resume-options-")
    try:
        options = help_options()
        check(len(options) > 20, f"--help lists {len(options)} options")
        table = changes(t)
        base = os.path.join(t, "base")
        r = run(base_cmd(base), {"QSHARD_TEST_KILL_AT": "layer-0"})
        check(r.returncode == -9, f"base run killed after layer 0 (rc {r.returncode} {r.stderr.strip()[-300:]})")
        manifest = json.load(open(os.path.join(base, ".qshard", "manifest.json")))
        plan = manifest["plan"]
        check(len(manifest["segments"]) == 1, "one layer recorded")
        bad = {k: v for k, v in plan.items() if not isinstance(v, str) or "unprintable" in v}
        check(not bad, f"every plan value is printable text {bad or ''}")
        check(plan.get("device") == "cpu", f"plan records the resolved device ({plan.get('device')})")
        for opt in options:
            if opt == "help":
                continue
            if opt in EXEMPT:
                print(f"exempt: --{opt}: {EXEMPT[opt]}")
                continue
            if opt not in table:
                check(False, f"--{opt} is neither in CHANGES nor in EXEMPT of {__file__}: add it")
                continue
            extra, key, new = table[opt]
            out = os.path.join(t, "o-" + opt)
            shutil.copytree(base, out)
            cmd = base_cmd(out)
            i = cmd.index(extra[0]) if extra[0] in cmd else -1
            if i >= 0 and len(extra) == 2:  # replace the base value
                cmd[i + 1] = extra[1]
            else:
                cmd += extra
            r = run(cmd)
            lines = r.stderr.strip().splitlines()
            old = plan.get(key, "(absent)")
            m = re.search(r"\((.+?) was (.*?), now (.*?)(; and \d+ more difference\(s\))?\): ", r.stderr)
            ok = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("qshard: error:") and m
                  and m.group(1) == key and m.group(2) == old and m.group(3) != old
                  and (new is None or m.group(3) == new))
            check(bool(ok), f"--{opt} changed on resume is refused naming {key}: {old} -> "
                            f"{new or '(file identity)'} (rc {r.returncode}: {r.stderr.strip()[-400:]})")
            segs = json.load(open(os.path.join(out, ".qshard", "manifest.json")))["segments"]
            check(len(segs) == 1, f"--{opt}: the refused rerun left the finished layer in place")
            shutil.rmtree(out, ignore_errors=True)
        # The one environment setting that changes bytes (the CUDA forward's GEMM precision).
        out = os.path.join(t, "o-env")
        shutil.copytree(base, out)
        r = run(base_cmd(out), {"QSHARD_CUDA_MATH": "fp32"})
        check(r.returncode == 2 and "(env QSHARD_CUDA_MATH was (absent), now fp32)" in r.stderr,
              f"QSHARD_CUDA_MATH set on resume is refused naming it ({r.stderr.strip()[-300:]})")
        stale = [o for o in table if o not in options]
        check(not stale, f"every option in CHANGES is still an option {stale or ''}")
    finally:
        shutil.rmtree(t, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
