#!/usr/bin/env python3
"""Checks qshard's exports with readers we did not write.

Runs the export_sample tool (argv[1]), which writes GPTQ, compressed-tensors, fake-quant
and HDF5 exports of seeded QuantizedLinears plus reference.safetensors (the weights each
export must decode to). Then:

- GPTQ and compressed-tensors shards are read with the `safetensors` package and decoded
  by the small numpy dequantizer below, written from formats.md (B.3 bit order, B.4
  zero points with v1 "minus one", D.3 packing, D.1 config groups). The result must equal
  the reference bit for bit (the reference rounds scales to F16 / BF16 the same way),
  and agree with the fake-quant weights to BF16 rounding.
- The fake-quant export must hold the reference rounded to BF16, and config.json unchanged.
- Index files, shard metadata, config.json / quantize_config.json are checked against A/B/D.
- The HDF5 export is read with h5py (exit 77, skipped, if h5py is missing) following
  docs/formats-hdf5.md, and `h5dump -H` must succeed on it.
- compressed-tensors int-quantized (W8A8 / W4A8: weight I8 holding the signed code,
  weight_scale, input_activations int8 dynamic per token) is decoded from formats.md D.6
  and compressed-tensors' naive_quantized compressor; the activation scheme recorded by
  fake-quant and HDF5 exports is checked.
- AWQ (GEMM) is unpacked the way AutoAWQ's awq/utils/packing_utils.py does it (shift
  out eight nibbles per int32, then undo the interleave with AWQ_REVERSE_ORDER) and
  dequantized as (q - zero) * scale.
The compressed_tensors package itself is not used: its releases need torch >= 2.3
(torch.uint16, float8 dtypes) and this venv has torch 1.13.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def load_dir(d):
    """All tensors of a checkpoint directory as torch tensors, validating the index (A.7)."""
    index_path = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index_path):
        index = json.load(open(index_path))
        shards = sorted(set(index["weight_map"].values()))
        check(all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s) for s in shards),
              f"{d}: shard names {shards}")
        check(not os.path.exists(os.path.join(d, "model.safetensors")),
              f"{d}: model.safetensors next to an index")
    else:
        index, shards = None, ["model.safetensors"]
    tensors, total = {}, 0
    for s in shards:
        with safe_open(os.path.join(d, s), framework="pt") as f:
            check(f.metadata() == {"format": "pt"}, f"{d}/{s}: metadata {f.metadata()}")
            for k in f.keys():
                check(k not in tensors, f"{d}: tensor {k} in two shards")
                t = f.get_tensor(k)
                tensors[k] = t
                total += t.numel() * t.element_size()
                if index is not None:
                    check(index["weight_map"].get(k) == s, f"{d}: index puts {k} elsewhere")
    if index is not None:
        check(set(index["weight_map"]) == set(tensors), f"{d}: index and shards disagree")
        check(index["metadata"]["total_size"] == total,
              f"{d}: total_size {index['metadata']['total_size']} != {total}")
    return tensors


def np_of(t):
    if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
        return t.float().numpy()
    return t.numpy()


def unpack_stream(words, bits, count):
    """Fields along axis 0 of a dense LSB-first bit stream in int32 words (B.3, D.3):
    field i sits at stream bits [i*bits, i*bits+bits), word w holds bits [32w, 32w+32)."""
    w64 = words.astype(np.int64) & 0xFFFFFFFF
    pos = np.arange(count, dtype=np.int64) * bits
    w, off = pos // 32, pos % 32
    val = w64[w] >> off[:, None]
    spill = off + bits > 32
    if spill.any():
        nxt = w64[np.minimum(w + 1, w64.shape[0] - 1)] << (32 - off)[:, None]
        val = np.where(spill[:, None], val | nxt, val)
    return (val & ((1 << bits) - 1)).astype(np.int64)


def dequant(scales, codes, zeros, g_idx):
    """scales, zeros: [out, n_groups]; codes: [out, in]; all float32 arithmetic."""
    s = scales[:, g_idx].astype(np.float32)
    z = zeros[:, g_idx].astype(np.float32)
    return s * (codes.astype(np.float32) - z)


def gptq_modules(t, qc):
    bits0 = qc["bits"]
    v2 = qc.get("checkpoint_format", "gptq") == "gptq_v2"
    dynamic = qc.get("dynamic") or {}
    out = {}
    for name in t:
        if not name.endswith(".qweight"):
            continue
        m = name[: -len(".qweight")]
        bits = bits0
        for pattern, override in dynamic.items():
            if pattern.startswith("-:"):
                continue
            if re.match(pattern[2:] if pattern.startswith("+:") else pattern, m):
                bits = override.get("bits", bits0)
                break
        qweight = t[m + ".qweight"].numpy()
        qzeros = t[m + ".qzeros"].numpy()
        scales = np_of(t[m + ".scales"])
        g_idx = t[m + ".g_idx"].numpy().astype(np.int64)
        check(t[m + ".scales"].dtype == torch.float16, f"{m}.scales is not F16")
        check(qweight.dtype == np.int32 and qzeros.dtype == np.int32, f"{m}: not I32")
        n_in, n_out = qweight.shape[0] * 32 // bits, qweight.shape[1]
        ng = scales.shape[0]
        check(qzeros.shape == (ng, n_out * bits // 32), f"{m}.qzeros shape {qzeros.shape}")
        check(g_idx.shape == (n_in,), f"{m}.g_idx shape {g_idx.shape}")
        codes = unpack_stream(qweight, bits, n_in).T            # [out, in]
        zeros = unpack_stream(qzeros.T, bits, n_out)             # [out, ng]
        if not v2:
            zeros = zeros + 1                                    # B.4 v1 stores zero - 1
        out[m] = dequant(scales.T, codes, zeros, g_idx)
    return out


def ct_scheme(qc, m):
    groups = list(qc["config_groups"].values())
    for g in groups:
        for target in g["targets"]:
            if target == m or (target.startswith("re:") and re.match(target[3:], m)):
                return g["weights"]
    for g in groups:
        if "Linear" in g["targets"]:
            return g["weights"]
    raise AssertionError(f"no config group for {m}")


def ct_modules(t, qc):
    out = {}
    for name in t:
        if not name.endswith(".weight_packed"):
            continue
        m = name[: -len(".weight_packed")]
        w = ct_scheme(qc, m)
        bits = w["num_bits"]
        n_out, n_in = (int(x) for x in t[m + ".weight_shape"].numpy())
        check(t[m + ".weight_shape"].dtype == torch.int64, f"{m}.weight_shape not I64")
        packed = t[m + ".weight_packed"].numpy()
        check(packed.shape == (n_out, (n_in * bits + 31) // 32), f"{m}.weight_packed {packed.shape}")
        check(t[m + ".weight_scale"].dtype == torch.bfloat16, f"{m}.weight_scale not BF16")
        scales = np_of(t[m + ".weight_scale"])                  # [out, ng]
        ng = scales.shape[1]
        if w["strategy"] == "channel":
            check(ng == 1 and w["group_size"] is None, f"{m}: channel scheme with {ng} groups")
        else:
            check(ng * w["group_size"] == n_in, f"{m}: {ng} groups of {w['group_size']}")
        codes = unpack_stream(packed.T, bits, n_in).T           # [out, in], unsigned fields
        if w["symmetric"]:
            check(m + ".weight_zero_point" not in t, f"{m}: symmetric with a zero point")
            zeros = np.full((n_out, ng), 1 << (bits - 1))      # D.3: signed q = field - 2^(b-1)
        else:
            zp = t[m + ".weight_zero_point"].numpy()
            check(zp.shape == ((n_out * bits + 31) // 32, ng), f"{m}.weight_zero_point {zp.shape}")
            zeros = unpack_stream(zp, bits, n_out)               # packed along out
        if m + ".weight_g_idx" in t:
            check(w["actorder"] == "group", f"{m}: weight_g_idx without actorder group")
            g_idx = t[m + ".weight_g_idx"].numpy().astype(np.int64)
        else:
            check(w["actorder"] is None, f"{m}: actorder {w['actorder']} without weight_g_idx")
            g_idx = np.arange(n_in) // (n_in // ng)
        out[m] = dequant(scales, codes, zeros, g_idx)
    return out


def ct_int_modules(t, qc):
    """int-quantized (D.6): weight is I8 holding the signed code, w = scale * (q - zp)."""
    out = {}
    for name in t:
        if not name.endswith(".weight_scale") or name[: -len("_scale")] not in t:
            continue
        m = name[: -len(".weight_scale")]
        q = t[m + ".weight"]
        check(q.dtype == torch.int8, f"{m}.weight is {q.dtype}, expected int8")
        check(m + ".weight_packed" not in t and m + ".weight_shape" not in t, f"{m}: packed tensors")
        w = ct_scheme(qc, m)
        bits = w["num_bits"]
        q = q.numpy().astype(np.int64)
        check(q.min() >= -(1 << (bits - 1)) and q.max() <= (1 << (bits - 1)) - 1,
              f"{m}: codes outside the signed {bits}-bit range")
        scales = np_of(t[m + ".weight_scale"])
        check(t[m + ".weight_scale"].dtype == torch.bfloat16, f"{m}.weight_scale not BF16")
        n_out, n_in = q.shape
        ng = scales.shape[1]
        check(scales.shape[0] == n_out and n_in % ng == 0, f"{m}.weight_scale {scales.shape}")
        check(w["symmetric"] and m + ".weight_zero_point" not in t, f"{m}: zero point in a symmetric scheme")
        g_idx = np.arange(n_in) // (n_in // ng)
        out[m] = dequant(scales, q, np.zeros((n_out, ng)), g_idx)
    return out


AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def awq_unpack(words):
    """AutoAWQ unpack_awq + reverse_awq_order on int32 [rows, cols] -> 4-bit [rows, 8 cols]."""
    w = words.astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(0, 32, 4)
    vals = ((w[:, :, None] >> shifts[None, None, :]) & 0xF).reshape(w.shape[0], -1)
    order = np.arange(vals.shape[1]).reshape(-1, 8)[:, AWQ_REVERSE_ORDER].reshape(-1)
    return vals[:, order]


def awq_modules(t, qc):
    check(qc == {"quant_method": "awq", "bits": 4, "group_size": qc["group_size"], "zero_point": True,
                 "version": "gemm", "modules_to_not_convert": None}, f"awq config {qc}")
    out = {}
    for name in t:
        if not name.endswith(".qweight"):
            continue
        m = name[: -len(".qweight")]
        qweight, qzeros = t[m + ".qweight"].numpy(), t[m + ".qzeros"].numpy()
        check(qweight.dtype == np.int32 and qzeros.dtype == np.int32, f"{m}: not I32")
        check(t[m + ".scales"].dtype == torch.float16, f"{m}.scales not F16")
        scales = np_of(t[m + ".scales"])                       # [ng, out]
        n_in, n_out = qweight.shape[0], qweight.shape[1] * 8
        ng = scales.shape[0]
        check(ng * qc["group_size"] == n_in, f"{m}: {ng} groups of {qc['group_size']} for {n_in}")
        check(qzeros.shape == (ng, n_out // 8) and scales.shape == (ng, n_out), f"{m}: shapes")
        check(m + ".g_idx" not in t, f"{m}: AWQ has no g_idx")
        iw = awq_unpack(qweight)                               # [in, out]
        iz = awq_unpack(qzeros)                                # [ng, out]
        g = np.arange(n_in) // qc["group_size"]
        w = scales[g].astype(np.float32) * (iw.astype(np.float32) - iz[g].astype(np.float32))
        out[m] = w.T
    return out


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.astype(np.float32).view(np.uint32),
                                                 b.astype(np.float32).view(np.uint32))


def to_bf16(x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def check_hdf5(root, ref, source):
    try:
        import h5py
    except ImportError:
        print("SKIP: h5py is not installed (apt-get install python3-h5py)")
        return False
    e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)
    for name in ("hdf5-sym", "hdf5-asym", "hdf5-mixed"):
        d = os.path.join(root, name)
        path = os.path.join(d, "model.h5")
        qc = json.load(open(os.path.join(d, "config.json")))["quantization_config"]
        check(qc["quant_method"] == "qshard-hdf5" and qc["file"] == "model.h5", f"{d}: config {qc}")
        with h5py.File(path, "r") as f:
            check(f.attrs["layout"] == "qshard-hdf5" and f.attrs["layout_version"] == 1,
                  f"{path}: root attributes {dict(f.attrs)}")
            seen = set()
            for m, g in f.items():
                if m == "dense":
                    for n, ds in g.items():
                        want = source[n]
                        check(ds.attrs["dtype"] == "BF16", f"{path}:/dense/{n} dtype {ds.attrs['dtype']}")
                        check(ds.dtype == np.uint16 and tuple(ds.shape) == tuple(want.shape),
                              f"{path}:/dense/{n} {ds.dtype} {ds.shape}")
                        check(np.array_equal(ds[()].view(np.int16), want.view(torch.int16).numpy()),
                              f"{path}:/dense/{n} bytes")
                    continue
                check(g.attrs["kind"] == "quantized_linear", f"{path}:/{m} kind")
                seen.add(m)
                fam, bits = g.attrs["family"], int(g.attrs["bits"])
                codes = g["codes"][()].astype(np.int64)
                scales = g["scales"][()]
                g_idx = g["g_idx"][()].astype(np.int64)
                ts = np.float32(g["tensor_scale"][()])
                check(codes.shape == (g.attrs["out_features"], g.attrs["in_features"]),
                      f"{path}:/{m} codes shape {codes.shape}")
                check(scales.dtype == np.float32 and g["g_idx"].dtype == np.int32 and g["codes"].dtype == np.uint8,
                      f"{path}:/{m} dtypes")
                s = scales[:, g_idx]
                if fam == "int":
                    if g.attrs["symmetric"]:
                        check("zeros" not in g, f"{path}:/{m} symmetric with zeros")
                        zeros = np.full(scales.shape, 1 << (bits - 1), dtype=np.float32)
                    else:
                        zeros = g["zeros"][()]
                    w = s * (codes.astype(np.float32) - zeros[:, g_idx])
                elif fam == "mxint":
                    k = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
                    w = np.ldexp(k.astype(np.float32), -(bits - 2)).astype(np.float32) * s
                elif fam in ("mxfp4", "nvfp4"):
                    e = np.where(codes & 8, -e2m1[codes & 7], e2m1[codes & 7]).astype(np.float32)
                    w = e * s
                    if fam == "nvfp4":
                        w = w * ts
                else:
                    check(False, f"{path}:/{m} family {fam}")
                    continue
                want = ref[f"{name}/{m}.weight"].numpy()
                check(same_bits(w, want), f"{path}:/{m}: h5py dequant != reference "
                      f"(max diff {np.abs(w - want).max()})")
            want_mods = {k.split("/", 1)[1][: -len(".weight")] for k in ref if k.startswith(name + "/")}
            check(seen == want_mods, f"{path}: modules {sorted(seen)} != {sorted(want_mods)}")
        h5dump = shutil.which("h5dump")
        if h5dump is None:
            print("SKIP: h5dump not found (apt-get install hdf5-tools)")
            return False
        r = subprocess.run([h5dump, "-H", path], capture_output=True, text=True)
        check(r.returncode == 0, f"h5dump -H {path}: rc {r.returncode} {r.stderr[-500:]}")
        check('GROUP "dense"' in r.stdout and 'DATASET "codes"' in r.stdout,
              f"h5dump -H {path}: unexpected header dump")
    return True


def main():
    tool = sys.argv[1]
    root = tempfile.mkdtemp(prefix="qshard-export-py-")
    try:
        subprocess.run([tool, root], check=True)
        ref = {}
        with safe_open(os.path.join(root, "reference.safetensors"), framework="pt") as f:
            for k in f.keys():
                ref[k] = f.get_tensor(k)
        source = load_dir(os.path.join(root, "source"))
        src_cfg = json.load(open(os.path.join(root, "source", "config.json")))

        def modules_of(name):
            return {k.split("/", 1)[1][: -len(".weight")]: v.numpy() for k, v in ref.items()
                    if k.startswith(name + "/")}

        fq = {}
        for name in ("fakequant-sym", "fakequant-asym"):
            d = os.path.join(root, name)
            t = load_dir(d)
            check(open(os.path.join(d, "config.json")).read() ==
                  open(os.path.join(root, "source", "config.json")).read(), f"{d}: config.json changed")
            for m, want in modules_of(name).items():
                got = t[m + ".weight"]
                check(got.dtype == torch.bfloat16, f"{d}: {m}.weight is {got.dtype}")
                check(same_bits(got.float().numpy(), to_bf16(want)), f"{d}: {m}.weight != bf16(reference)")
                fq[(name.split("-")[1], m)] = got.float().numpy()
            for n, s in source.items():
                check(torch.equal(t[n], s), f"{d}: dense {n} changed")

        for name, reader in (("gptq-sym", "gptq"), ("gptq-asym", "gptq"),
                             ("ct-sym", "ct"), ("ct-asym", "ct")):
            d = os.path.join(root, name)
            t = load_dir(d)
            cfg = json.load(open(os.path.join(d, "config.json")))
            qc = cfg["quantization_config"]
            check({k: v for k, v in cfg.items() if k != "quantization_config"} == src_cfg,
                  f"{d}: config.json lost source keys")
            for n, s in source.items():
                check(torch.equal(t[n], s), f"{d}: dense {n} changed")
            if reader == "gptq":
                check(json.load(open(os.path.join(d, "quantize_config.json"))) == qc,
                      f"{d}: quantize_config.json != quantization_config")
                check(qc["quant_method"] == "gptq" and qc["desc_act"] is True, f"{d}: {qc}")
                check(qc["checkpoint_format"] == ("gptq" if name.endswith("sym") and "asym" not in name
                                                  else "gptq_v2"), f"{d}: checkpoint_format")
                got = gptq_modules(t, qc)
            else:
                check(qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
                      and qc["quantization_status"] == "compressed", f"{d}: {qc}")
                check(qc["ignore"] == ["lm_head"], f"{d}: ignore {qc['ignore']}")
                for g in qc["config_groups"].values():
                    allowed = {"num_bits", "type", "symmetric", "strategy", "group_size", "dynamic",
                               "actorder", "block_structure", "observer", "observer_kwargs"}
                    check(set(g["weights"]) <= allowed, f"{d}: unknown weight args {set(g['weights']) - allowed}")
                got = ct_modules(t, qc)
            want = modules_of(name)
            check(set(got) == set(want), f"{d}: modules {sorted(got)} != {sorted(want)}")
            kind = "asym" if "asym" in name else "sym"
            for m in want:
                if m not in got:
                    continue
                check(same_bits(got[m], want[m]),
                      f"{d}: numpy dequant of {m} != reference (max diff {np.abs(got[m] - want[m]).max()})")
                if (kind, m) in fq and not (reader == "ct" and kind == "sym"):
                    # Same codes as the fake-quant export: equal up to the scale rounding
                    # (F16 / BF16) and the fake-quant weights' BF16 rounding.
                    a, b = got[m], fq[(kind, m)]
                    check(np.allclose(a, b, rtol=2 ** -7, atol=0),
                          f"{d}: {m} differs from fake-quant by {np.abs(a - b).max()}")

        # Activation-quantized compressed-tensors (W8A8, W4A8) and AWQ.
        for name in ("ct-w8a8", "ct-w4a8", "awq"):
            d = os.path.join(root, name)
            t = load_dir(d)
            cfg = json.load(open(os.path.join(d, "config.json")))
            qc = cfg["quantization_config"]
            check({k: v for k, v in cfg.items() if k != "quantization_config"} == src_cfg,
                  f"{d}: config.json lost source keys")
            for n, s in source.items():
                check(torch.equal(t[n], s), f"{d}: dense {n} changed")
            if name == "awq":
                check(not os.path.exists(os.path.join(d, "quantize_config.json")), f"{d}: quantize_config.json")
                got = awq_modules(t, qc)
            else:
                check(qc["format"] == "int-quantized" and qc["ignore"] == ["lm_head"], f"{d}: {qc}")
                for g in qc["config_groups"].values():
                    a = g["input_activations"]
                    check(a == {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                                "group_size": None, "dynamic": True, "actorder": None,
                                "block_structure": None, "observer": None, "observer_kwargs": {}},
                          f"{d}: input_activations {a}")
                    wa = g["weights"]
                    if name == "ct-w8a8":
                        check(wa["num_bits"] == 8 and wa["strategy"] == "channel" and wa["symmetric"],
                              f"{d}: weights {wa}")
                    else:
                        check(wa["num_bits"] == 4 and wa["strategy"] == "group" and wa["symmetric"],
                              f"{d}: weights {wa}")
                got = ct_int_modules(t, qc)
            want = modules_of(name)
            check(set(got) == set(want), f"{d}: modules {sorted(got)} != {sorted(want)}")
            for m in want:
                if m in got:
                    check(same_bits(got[m], want[m]),
                          f"{d}: numpy dequant of {m} != reference (max diff {np.abs(got[m] - want[m]).max()})")
        d = os.path.join(root, "fakequant-w8a8")
        cfg = json.load(open(os.path.join(d, "config.json")))
        check(cfg.get("qshard_activation_quant") == {"format": "int8", "ignore": ["lm_head"]},
              f"{d}: activation scheme {cfg.get('qshard_activation_quant')}")
        check({k: v for k, v in cfg.items() if k != "qshard_activation_quant"} == src_cfg,
              f"{d}: config.json changed beyond the activation scheme")
        qc = json.load(open(os.path.join(root, "hdf5-w4a8", "config.json")))["quantization_config"]
        check(qc.get("act_format") == "mxint8", f"hdf5-w4a8: act_format {qc.get('act_format')}")

        hdf5_checked = check_hdf5(root, ref, source)
        if FAILURES:
            print(f"{len(FAILURES)} check(s) failed")
            return 1
        if not hdf5_checked:
            return 77
        print("all export checks passed")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
