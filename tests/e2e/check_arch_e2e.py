#!/usr/bin/env python3
"""End to end on the tiny random-weight checkpoints of the families beyond Llama
(tests/model/data/golden/rand-*, made by transformers with tools/make_arch_golden.py):
`qshard quantize` (rtn and gptq, int4 g32, fakequant and compressed-tensors), then
`qshard eval --model OUT --reference ORIGINAL` on random token streams.

Checks per family: every run evaluates; GPTQ's KLD is below RTN's (random weights,
random tokens: the margin is small, so only "below"); the export holds every tensor of
the source under the source's names (fakequant: same names, shapes and dtypes;
compressed-tensors: the quantized Linears as .weight_packed/.weight_scale, everything
else as stored: MoE routers and qwen2_moe's shared_expert_gate unquantized); MoE: the
report gives each expert's routed calibration tokens, which sum per layer to
tokens x num_experts_per_tok (gate_up and down alike). The MoE families, gptq: 2 and 3
ranks (mpirun; each expert fitted by its owner rank from the rows routed to it) write the
bytes of 1 rank, as does rand-mixtral grown to 8 experts (3, 3, 2 per rank); qwen2_moe
also: a 2-rank run killed in the middle of its second MoE layer (after expert 2's gate/up,
QSHARD_TEST_KILL_AT) and run again writes them too. mixtral with 32 calibration tokens:
the experts under 16 routed tokens fall back to RTN, warned (--moe-starved rtn), get GPTQ
with all-tokens and routed (both also at 2 ranks, same bytes); qwen3_moe with 4: experts
no token reaches are quantized too (RTN). The AWQ family and SmoothQuant (awq, awq-joint,
smoothquant+gptq; fakequant): KLD below RTN's, the source's tensor names and dtypes; MoE:
the report's routed tokens (awq), the routers written scaled (they take the experts' shared
input scale); qwen2_moe awq and awq-joint killed mid-MoE-layer and resumed write the bytes
of one run; mixtral and qwen2_moe awq and awq-joint at 2 ranks write the bytes of 1.
--moe-starved all-tokens with --method awq is refused (row 67).
Env: QSHARD_BIN, QSHARD_SOURCE_DIR. Exit 0 pass, 1 fail.
"""
import json
import os
import random
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import MPIRUN, QBIN, attempt, check, run, verdict  # noqa: E402

GOLDEN = os.path.join(os.environ["QSHARD_SOURCE_DIR"], "tests", "model", "data", "golden")
FAMILIES = ["rand-qwen3", "rand-mixtral", "rand-qwen2-moe", "rand-qwen3-moe"]
SEQLEN, CALIB_WINDOWS, EVAL_WINDOWS = 32, 16, 8
FORMAT = ["--format", "int4", "--group-size", "16"]  # divides the experts' 48


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def tensors_of(model_dir):
    out = {}
    for f in sorted(os.listdir(model_dir)):
        if f.startswith("model") and f.endswith(".safetensors"):  # not golden.safetensors
            out.update(safetensors_header(os.path.join(model_dir, f)))
    return out


def token_file(path, vocab, n, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(struct.pack(f"<{n}i", *[rng.randrange(vocab) for _ in range(n)]))


def evaluate(out, ref, tokens):
    args = [QBIN, "eval", "--model", out, "--reference", ref, "--tokens", tokens, "--seqlen",
            str(SEQLEN), "--json", "--quiet"]
    return json.loads(run(args).strip().splitlines()[-1])


def check_routing(name, out, src):
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    top_k = cfg.get("num_experts_per_tok")
    if not top_k:
        return
    with open(os.path.join(out, "quantize_report.json")) as f:
        modules = json.load(f)["modules"]
    routers = [k for k in tensors_of(src) if k.endswith(("block_sparse_moe.gate.weight", "mlp.gate.weight"))]
    ok = bool(routers)
    for layer in range(cfg["num_hidden_layers"]):
        for proj in ("w1", "w2", "gate_proj", "down_proj"):
            n = [m["routed_tokens"] for m in modules
                 if m["module"].startswith(f"model.layers.{layer}.") and ".experts." in m["module"]
                 and m["module"].endswith("." + proj)]
            if n and sum(n) != SEQLEN * CALIB_WINDOWS * top_k:
                ok = False
                print(f"  layer {layer} {proj}: routed {n}, sum {sum(n)}")
    counts = [m["routed_tokens"] for m in modules if ".experts." in m["module"]]
    print(f"  {name}: routed tokens per expert Linear {counts[:8]}...")
    check(ok, f"{name}: routed tokens per layer sum to {SEQLEN * CALIB_WINDOWS} x top-{top_k}; "
              f"{len(routers)} routers unquantized")


def check_family(name, tmp):
    src = os.path.join(GOLDEN, name)
    with open(os.path.join(src, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    calib, evalt = os.path.join(tmp, name + "-calib.tokens"), os.path.join(tmp, name + "-eval.tokens")
    token_file(calib, vocab, SEQLEN * CALIB_WINDOWS, 1)
    token_file(evalt, vocab, SEQLEN * EVAL_WINDOWS, 2)
    source = tensors_of(src)
    kld = {}
    for method in ("rtn", "gptq"):
        for export in ("fakequant", "compressed-tensors"):
            out = os.path.join(tmp, f"{name}-{method}-{export}")
            run([QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib", calib,
                 "--n-calib", str(CALIB_WINDOWS), "--calib-seqlen", str(SEQLEN), "--method", method,
                 "--export", export] + FORMAT)
            r = evaluate(out, src, evalt)
            kld[(method, export)] = r["kld_mean"]
            print(f"  {name:12s} {method:5s} {export:20s} ppl {r['ppl']:.4f} kld {r['kld_mean']:.5f} "
                  f"top1 {r['top1_agree']:.4f}")
            check(0 < r["kld_mean"] < 1.0, f"{name} {method} {export}: kld {r['kld_mean']:.4g} in (0, 1)")
            got = tensors_of(out)
            if export == "fakequant":
                same = {k: (v["dtype"], v["shape"]) for k, v in got.items()} == \
                       {k: (v["dtype"], v["shape"]) for k, v in source.items()}
                check(same, f"{name} {method} fakequant: the source's tensor names, shapes and dtypes")
            else:
                with open(os.path.join(out, "quantize_report.json")) as f:
                    modules = [m["module"] for m in json.load(f)["modules"] if m["format"] != "skipped"]
                missing = [m for m in modules if m + ".weight_packed" not in got]
                dense = [k for k in source if not any(k == m + ".weight" for m in modules)]
                check(not missing and all(k in got for k in dense),
                      f"{name} {method} compressed-tensors: {len(modules)} packed Linears, "
                      f"{len(dense)} dense tensors by their source names (missing {missing[:3]})")
            if method == "gptq" and export == "fakequant":
                check_routing(name, out, src)
    check(kld[("gptq", "fakequant")] < kld[("rtn", "fakequant")],
          f"{name}: gptq kld {kld[('gptq', 'fakequant')]:.4g} < rtn {kld[('rtn', 'fakequant')]:.4g}")
    check_scaling(name, tmp, kld[("rtn", "fakequant")])


def stored_tensors(model_dir):
    """(name, dtype, shape, raw bytes) of every tensor in the model*.safetensors shards."""
    for f in sorted(os.listdir(model_dir)):
        if not (f.startswith("model") and f.endswith(".safetensors")):
            continue
        with open(os.path.join(model_dir, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
            data = fh.read()
        header.pop("__metadata__", None)
        for k, v in header.items():
            b, e = v["data_offsets"]
            yield k, v["dtype"], tuple(v["shape"]), data[b:e]


def tensor_bytes(model_dir, suffixes):
    """name -> raw bytes of the tensors whose names end with one of `suffixes`."""
    return {k: raw for k, _, _, raw in stored_tensors(model_dir) if k.endswith(suffixes)}


def scaling_cmd(name, tmp, method, out):
    return [QBIN, "quantize", "--model", os.path.join(GOLDEN, name), "--out", out, "--quiet", "--calib",
            os.path.join(tmp, name + "-calib.tokens"), "--n-calib", str(CALIB_WINDOWS), "--calib-seqlen",
            str(SEQLEN), "--method", method, "--export", "fakequant"] + FORMAT


def check_scaling(name, tmp, rtn_kld):
    """The AWQ family and SmoothQuant: below RTN; an MoE layer's routers take the experts' scale."""
    src = os.path.join(GOLDEN, name)
    source = tensors_of(src)
    routers = (".block_sparse_moe.gate.weight", ".mlp.gate.weight", ".mlp.shared_expert_gate.weight")
    for method in ("awq", "awq-joint", "smoothquant+gptq"):
        out = os.path.join(tmp, f"{name}-{method}")
        run(scaling_cmd(name, tmp, method, out))
        r = evaluate(out, src, os.path.join(tmp, name + "-eval.tokens"))
        print(f"  {name:12s} {method:16s} fakequant ppl {r['ppl']:.4f} kld {r['kld_mean']:.5f} "
              f"top1 {r['top1_agree']:.4f} (rtn {rtn_kld:.5f})")
        same = {k: (v["dtype"], v["shape"]) for k, v in tensors_of(out).items()} == \
               {k: (v["dtype"], v["shape"]) for k, v in source.items()}
        check(same and 0 < r["kld_mean"] < rtn_kld,
              f"{name} {method}: kld {r['kld_mean']:.4g} < rtn {rtn_kld:.4g}; the source's names and dtypes")
        if method == "awq":  # the scaler's routed counts reach the report too
            check_routing(name + " awq", out, src)
        if method == "smoothquant+gptq" and ("-moe" in name or "mixtral" in name):
            a, b = tensor_bytes(src, routers), tensor_bytes(out, routers)
            check(a and a.keys() == b.keys() and all(a[k] != b[k] for k in a),
                  f"{name} {method}: all {len(a)} routers written scaled")


def check_scaling_resume(name, tmp):
    """awq and awq-joint killed in the middle of an MoE layer, run again: the bytes of an
    uninterrupted run (awq-joint feeds the next layer its own fake-quant weights, which the
    replay of layer 0 must round as the first run did)."""
    point = "layer-1-gate_up[expert 2]"
    for method in ("awq", "awq-joint"):
        out = os.path.join(tmp, f"{name}-{method}-killed")
        p = attempt(scaling_cmd(name, tmp, method, out), {"QSHARD_TEST_KILL_AT": point})
        check(p.returncode == -9, f"{name} {method}: killed at {point} (rc {p.returncode})")
        run(scaling_cmd(name, tmp, method, out))
        check(weights_digest(out) == weights_digest(os.path.join(tmp, f"{name}-{method}")),
              f"{name} {method}: resumed after a kill mid-MoE-layer: the same bytes")


def check_scaling_ranks(name, tmp):
    """awq and awq-joint at 2 ranks write the bytes of 1 (the scaler's statistics forwards
    see each rank's windows in other batches: the CPU linear's fixed sgemm shapes keep a
    row's bits from depending on that)."""
    for method in ("awq", "awq-joint"):
        out = os.path.join(tmp, f"{name}-{method}-2ranks")
        run(MPIRUN + ["-np", "2"] + scaling_cmd(name, tmp, method, out))
        check(weights_digest(out) == weights_digest(os.path.join(tmp, f"{name}-{method}")),
              f"{name} {method}: 2 ranks write the bytes of 1")


def weights_digest(out):
    """sha256 of every tensor's bytes by name, whatever the sharding (2 ranks write 2 shards)."""
    import hashlib
    return {k: (dtype, shape, hashlib.sha256(raw).hexdigest()) for k, dtype, shape, raw in stored_tensors(out)}


def check_ranks_and_resume(name, tmp, kill=False):
    """2 and 3 ranks (each expert fitted by its owner rank from the rows routed to it from every
    rank) write the bytes of 1; with `kill`, a 2-rank run killed in the middle of its second MoE
    layer and run again writes them too."""
    src = os.path.join(GOLDEN, name)
    calib = os.path.join(tmp, name + "-calib.tokens")

    def cmd(out):
        return [QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib", calib, "--n-calib",
                str(CALIB_WINDOWS), "--calib-seqlen", str(SEQLEN), "--method", "gptq", "--export",
                "fakequant"] + FORMAT
    ref = weights_digest(os.path.join(tmp, f"{name}-gptq-fakequant"))
    for ranks in (2, 3):
        out = os.path.join(tmp, f"{name}-{ranks}ranks")
        run(MPIRUN + ["-np", str(ranks)] + cmd(out))
        check(weights_digest(out) == ref, f"{name}: {ranks} ranks write the bytes of 1")
    if not kill:
        return
    out = os.path.join(tmp, f"{name}-killed")
    point = "layer-1-gate_up[expert 2]"
    p = attempt(MPIRUN + ["-np", "2"] + cmd(out), {"QSHARD_TEST_KILL_AT": point})
    check(p.returncode != 0 and not os.path.exists(os.path.join(out, "config.json")),
          f"{name}: 2 ranks killed at {point} (rc {p.returncode})")
    run(MPIRUN + ["-np", "2"] + cmd(out))
    check(weights_digest(out) == ref, f"{name}: 2 ranks resumed after a kill mid-MoE-layer: the same bytes")


def eight_experts(tmp):
    """rand-mixtral grown to 8 experts (8 on 3 ranks: 3, 3, 2), by bytes: experts 4-7 are
    experts 0-3 with their rows reversed, the router's rows 4-7 its rows 0-3 with their
    columns reversed (bf16: 2 bytes an element)."""
    src = os.path.join(GOLDEN, "rand-mixtral")
    out = os.path.join(tmp, "rand-mixtral-8")
    os.makedirs(out)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["num_local_experts"] = 8
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)

    def rows(b, shape):
        width = shape[1] * 2
        return [b[i:i + width] for i in range(0, len(b), width)]
    tensors = {}
    for k, v in header.items():
        b = data[v["data_offsets"][0]:v["data_offsets"][1]]
        tensors[k] = (v["shape"], b)
        if ".experts." in k:
            e = int(k.split(".experts.")[1].split(".")[0])
            tensors[k.replace(f".experts.{e}.", f".experts.{e + 4}.")] = (v["shape"], b"".join(rows(b, v["shape"])[::-1]))
    for k in [k for k in tensors if k.endswith("block_sparse_moe.gate.weight")]:
        shape, b = tensors[k]
        flipped = [b"".join(r[i:i + 2] for i in range(len(r) - 2, -2, -2)) for r in rows(b, shape)]
        tensors[k] = ([8, shape[1]], b + b"".join(flipped))
    meta, blob = {}, b""
    for k in sorted(tensors):
        shape, b = tensors[k]
        meta[k] = {"dtype": "BF16", "shape": shape, "data_offsets": [len(blob), len(blob) + len(b)]}
        blob += b
    head = json.dumps(meta).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + blob)
    return out


def check_eight_experts(tmp):
    """8 experts on 3 ranks (3, 3, 2 per owner) write the bytes of 1 rank."""
    src = eight_experts(tmp)
    calib = os.path.join(tmp, "rand-mixtral-calib.tokens")

    def cmd(out):
        return [QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib", calib, "--n-calib",
                str(CALIB_WINDOWS), "--calib-seqlen", str(SEQLEN), "--method", "gptq", "--export",
                "fakequant"] + FORMAT
    one, three = os.path.join(tmp, "mixtral8-1"), os.path.join(tmp, "mixtral8-3ranks")
    run(cmd(one))
    run(MPIRUN + ["-np", "3"] + cmd(three))
    d = weights_digest(one)
    check(d == weights_digest(three) and sum(".experts.7." in k for k in d) == 6,
          "rand-mixtral grown to 8 experts: 3 ranks write the bytes of 1")


def check_few_tokens(name, tmp):
    """Experts that fewer than 16 calibration tokens reach: RTN, a warning, and the report says so."""
    src = os.path.join(GOLDEN, name)
    calib = os.path.join(tmp, name + "-calib.tokens")
    out = os.path.join(tmp, f"{name}-few")
    p = attempt([QBIN, "quantize", "--model", src, "--out", out, "--calib", calib, "--n-calib", "1",
                 "--calib-seqlen", str(SEQLEN), "--method", "gptq", "--export", "fakequant",
                 "--moe-starved", "rtn"] + FORMAT)
    with open(os.path.join(out, "quantize_report.json")) as f:
        experts = [m for m in json.load(f)["modules"] if ".experts." in m["module"]]
    few = [m for m in experts if m["routed_tokens"] < 16]
    check(p.returncode == 0 and 0 < len(few) < len(experts) and all(m["rtn_fallback"] and m["gptq_loss"] == 0 for m in few)
          and "quantized with RTN" in p.stderr,
          f"{name}: {len(few)} of {len(experts)} expert Linears under 16 tokens fell back to RTN with a warning")
    refused = os.path.join(tmp, f"{name}-awq-starved")
    p = attempt([QBIN, "quantize", "--model", src, "--out", refused, "--calib", calib, "--method", "awq",
                 "--moe-starved", "all-tokens"] + FORMAT)
    errors = [line for line in p.stderr.splitlines() if line.startswith("qshard: error:")]
    check(p.returncode == 2 and len(errors) == 1 and "--moe-starved all-tokens" in errors[0] and "awq+gptq" in errors[0]
          and not os.path.exists(refused),
          f"{name}: --method awq --moe-starved all-tokens refused before --out is made (docs/errors.md row 67)")


def check_starved_modes(name, tmp):
    """--moe-starved all-tokens and routed on 32 tokens (2 windows of 16): the starved experts get
    GPTQ (no RTN fallback, a GPTQ loss), the model evaluates; both write the same bytes at 2
    ranks (all-tokens: every rank's rows go to the starved expert's owner); --moe-min-tokens 0
    starves none."""
    src = os.path.join(GOLDEN, name)

    def cmd(out, *extra):
        return [QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib",
                os.path.join(tmp, name + "-calib.tokens"), "--n-calib", "2", "--calib-seqlen", str(SEQLEN // 2),
                "--method", "gptq", "--export", "fakequant"] + FORMAT + list(extra)  # 2 windows: 2 ranks
    for mode in ("all-tokens", "routed"):
        out = os.path.join(tmp, f"{name}-starved-{mode}")
        run(cmd(out, "--moe-starved", mode))
        with open(os.path.join(out, "quantize_report.json")) as f:
            few = [m for m in json.load(f)["modules"] if 0 < m.get("routed_tokens", -1) < 16]
        r = evaluate(out, src, os.path.join(tmp, name + "-eval.tokens"))
        check(few and not any(m["rtn_fallback"] for m in few) and all(m["gptq_loss"] > 0 for m in few)
              and 0 < r["kld_mean"] < 1.0,
              f"{name} --moe-starved {mode}: {len(few)} starved expert Linears by GPTQ, kld {r['kld_mean']:.4g}")
        two = os.path.join(tmp, f"{name}-starved-{mode}-2ranks")
        run(MPIRUN + ["-np", "2"] + cmd(two, "--moe-starved", mode))
        check(weights_digest(two) == weights_digest(out), f"{name} --moe-starved {mode}: 2 ranks write the bytes of 1")
    out = os.path.join(tmp, f"{name}-min0")
    run(cmd(out, "--moe-starved", "rtn", "--moe-min-tokens", "0"))
    with open(os.path.join(out, "quantize_report.json")) as f:
        check(not any(m.get("rtn_fallback") for m in json.load(f)["modules"]),
              f"{name} --moe-min-tokens 0: no expert falls back to RTN")


def check_unrouted_expert(name, tmp):
    """4 calibration tokens: experts no token reaches are quantized (RTN) and the model evaluates."""
    src = os.path.join(GOLDEN, name)
    out = os.path.join(tmp, f"{name}-unrouted")
    run([QBIN, "quantize", "--model", src, "--out", out, "--quiet", "--calib", os.path.join(tmp, name + "-calib.tokens"),
         "--n-calib", "1", "--calib-seqlen", "4", "--method", "gptq", "--export", "fakequant"] + FORMAT)
    with open(os.path.join(out, "quantize_report.json")) as f:
        zero = [m for m in json.load(f)["modules"] if m.get("routed_tokens") == 0]
    r = evaluate(out, src, os.path.join(tmp, name + "-eval.tokens"))
    check(zero and all(m["rtn_fallback"] for m in zero) and 0 < r["kld_mean"] < 1.0,
          f"{name}: {len(zero)} expert Linears with no routed calibration token: RTN, kld {r['kld_mean']:.4g}")


def main():
    with tempfile.TemporaryDirectory(prefix="qshard-arch-") as tmp:
        for name in FAMILIES:
            try:
                check_family(name, tmp)
                if name in ("rand-mixtral", "rand-qwen2-moe", "rand-qwen3-moe"):
                    check_ranks_and_resume(name, tmp, kill=name == "rand-qwen2-moe")
                if name == "rand-qwen2-moe":
                    check_scaling_resume(name, tmp)
                if name in ("rand-mixtral", "rand-qwen2-moe"):
                    check_scaling_ranks(name, tmp)
                if name == "rand-mixtral":
                    check_eight_experts(tmp)
                    check_few_tokens(name, tmp)
                    check_starved_modes(name, tmp)
                if name == "rand-qwen3-moe":
                    check_unrouted_expert(name, tmp)
            except RuntimeError as e:
                check(False, f"{name}: {e}")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
