#!/usr/bin/env python3
"""Cross-checks qshard's safetensors IO against the reference `safetensors` package.

usage: check_safetensors_python.py SAFETENSORS_SAMPLE_TOOL

Forward: the tool writes a single file and a sharded set with known contents; we read
them with safetensors.safe_open and compare values, dtypes, shapes, index.json.
Reverse: we write files with safetensors (torch and numpy) and by hand (F8_E4M3,
unaligned data, a sharded directory), the tool reads them, and we compare what it
prints (dtype, shape, FNV-1a of the bytes, first values as float32).
Exit 77 (skipped) when numpy or safetensors cannot be imported.
"""
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file as np_save_file
except ImportError as e:  # optional tooling: skip, do not fail
    print(f"skipped: cannot import numpy/safetensors ({e})")
    sys.exit(77)
try:
    import torch
    from safetensors.torch import save_file as torch_save_file
except ImportError:
    torch = None

TOOL = sys.argv[1]
FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg)


# Kept in step with sample_tensors() in write_sample.cpp.
SAMPLES = [
    ("w.bf16", "BF16", [3, 5, 7]), ("w.f16", "F16", [4, 9]), ("w.f32", "F32", [2, 3, 4]),
    ("w.f64", "F64", [7]), ("w.i64", "I64", [5, 2]), ("w.i32", "I32", [3, 3]),
    ("w.i16", "I16", [11]), ("w.i8", "I8", [2, 2, 2, 2]), ("w.u8", "U8", [13]),
    ("w.bool", "BOOL", [6]), ("w.f8", "F8_E4M3", [16, 16]), ("scalar.f32", "F32", []),
    ("empty.f16", "F16", [0, 3]), ("empty.i32", "I32", [4, 0]),
]
NP_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1, "F8_E4M3": 1}


def expected(dtype, shape, offset):
    """The sample contents as numpy storage (BF16 as uint16 bits, F8 as uint8 codes)."""
    n = math.prod(shape)
    i = np.arange(n, dtype=np.int64) + offset
    x = i.astype(np.float64) * 0.1 - 3.0
    if dtype == "BF16":
        if torch is not None:
            bits = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).view(torch.int16)
            out = bits.numpy().view(np.uint16)
        else:  # round to nearest even by hand
            u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
            out = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    elif dtype == "F8_E4M3":
        codes = (i * 7 + 3) % 256
        codes[(codes & 0x7F) == 0x7F] = 0
        out = codes.astype(np.uint8)
    elif dtype in ("F16", "F32"):
        out = x.astype(np.float32).astype(NP_DTYPES[dtype])
    elif dtype == "F64":
        out = x
    elif dtype == "I64":
        out = i * 1000000007 - 5000000000000
    elif dtype == "I32":
        out = (i * 65537 - 1000000).astype(np.int32)
    elif dtype == "I16":
        out = (i * 31 - 500).astype(np.int16)
    elif dtype == "I8":
        out = (i % 256 - 128).astype(np.int8)
    elif dtype == "U8":
        out = ((i * 3) % 256).astype(np.uint8)
    elif dtype == "BOOL":
        out = i % 3 == 0
    return out.reshape(shape)


def raw_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        return n, header, f.read()


def check_file_tensor(path, name, dtype, shape, want):
    n, header, data = raw_header(path)
    info = header[name]
    check(info["dtype"] == dtype, f"{path}:{name} dtype {info['dtype']} != {dtype}")
    check(info["shape"] == shape, f"{path}:{name} shape {info['shape']} != {shape}")
    if dtype in NP_DTYPES:
        with safe_open(path, framework="numpy") as f:
            got = f.get_tensor(name)
        check(got.dtype == NP_DTYPES[dtype], f"{path}:{name} numpy dtype {got.dtype}")
        check(list(got.shape) == shape, f"{path}:{name} numpy shape {got.shape}")
        check(np.array_equal(got, want), f"{path}:{name} values {got.ravel()[:6]} != {want.ravel()[:6]}")
    elif dtype == "BF16" and torch is not None:
        with safe_open(path, framework="pt") as f:
            got = f.get_tensor(name)
        check(got.dtype == torch.bfloat16 and list(got.shape) == shape, f"{path}:{name} {got.dtype}")
        check(np.array_equal(got.view(torch.int16).numpy().view(np.uint16), want),
              f"{path}:{name} bf16 bits differ")
    else:  # F8_E4M3 (torch < 2.1 has no float8) or BF16 without torch: the bytes
        b, e = info["data_offsets"]
        check(data[b:e] == want.tobytes(), f"{path}:{name} raw bytes differ")


def check_forward(tmp):
    out = os.path.join(tmp, "fwd")
    subprocess.run([TOOL, out], check=True)
    names = [s[0] for s in SAMPLES]

    single = os.path.join(out, "single")
    check(sorted(os.listdir(single)) == ["model.safetensors"], f"single: {os.listdir(single)}")
    path = os.path.join(single, "model.safetensors")
    n, header, _ = raw_header(path)
    check(n % 8 == 0, f"header length {n} not padded to 8")
    with safe_open(path, framework="numpy") as f:
        check(sorted(f.keys()) == sorted(names), f"keys {sorted(f.keys())}")
        check(f.metadata() == {"format": "pt"}, f"metadata {f.metadata()}")
    for k, (name, dtype, shape) in enumerate(SAMPLES):
        check_file_tensor(path, name, dtype, shape, expected(dtype, shape, 7 * k))

    sharded = os.path.join(out, "sharded")
    files = sorted(os.listdir(sharded))
    check("model.safetensors.index.json" in files, f"no index in {files}")
    shards = [f for f in files if f != "model.safetensors.index.json"]
    count = len(shards)
    check(count > 2, f"expected several shards, got {shards}")
    check(shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)],
          f"shard names {shards}")
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        index = json.load(f)
    wm = index["weight_map"]
    check(sorted(wm) == sorted(names), f"weight_map keys {sorted(wm)}")
    check(set(wm.values()) == set(shards), f"weight_map files {set(wm.values())}")
    total = sum(math.prod(s) * ITEMSIZE[d] for _, d, s in SAMPLES)
    check(index["metadata"]["total_size"] == total,
          f"total_size {index['metadata']['total_size']} != {total}")
    for shard in shards:
        with safe_open(os.path.join(sharded, shard), framework="numpy") as f:
            check(sorted(f.keys()) == sorted(t for t, s in wm.items() if s == shard),
                  f"{shard} keys {sorted(f.keys())}")
    for k, (name, dtype, shape) in enumerate(SAMPLES):
        check_file_tensor(os.path.join(sharded, wm[name]), name, dtype, shape,
                          expected(dtype, shape, 7 * k))


# ---- reverse direction ----

def fnv1a(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def e4m3_to_f32(code):
    sign = -1.0 if code & 0x80 else 1.0
    exp, mant = (code >> 3) & 0xF, code & 0x7
    if exp == 0xF and mant == 0x7:
        return float("nan")
    if exp == 0:
        return sign * mant * 2.0 ** -9
    return sign * (1 + mant / 8) * 2.0 ** (exp - 7)


assert e4m3_to_f32(0x38) == 1.0 and e4m3_to_f32(0x7E) == 448.0 and e4m3_to_f32(0x01) == 2.0 ** -9


def tool_read(path):
    """name -> (dtype, shape, hash, first values) as the C++ reader sees them."""
    res = subprocess.run([TOOL, "read", path], capture_output=True, text=True)
    check(res.returncode == 0, f"reading {path}: rc {res.returncode}: {res.stderr.strip()}")
    out = {}
    for line in res.stdout.splitlines():
        name, dtype, shape, h, *vals = line.split()
        shape = [int(d) for d in shape.strip("[]").split(",") if d]
        out[name] = (dtype, shape, int(h, 16), np.array([float(v) for v in vals], np.float32))
    return out


def compare(path, got, name, dtype, shape, raw_bytes, values):
    if name not in got:
        check(False, f"{path}: C++ reader did not list {name}")
        return
    g_dtype, g_shape, g_hash, g_vals = got[name]
    check(g_dtype == dtype, f"{path}:{name} C++ dtype {g_dtype} != {dtype}")
    check(g_shape == list(shape), f"{path}:{name} C++ shape {g_shape} != {list(shape)}")
    check(g_hash == fnv1a(raw_bytes), f"{path}:{name} C++ read different bytes")
    want = np.asarray(values, np.float32).ravel()[:8]
    check(np.array_equal(g_vals, want, equal_nan=True), f"{path}:{name} C++ values {g_vals} != {want}")


def check_reverse(tmp):
    rng = np.random.default_rng(1234)
    # numpy writer
    arrays = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "f64": rng.standard_normal((3, 1, 2)),
        "i64": rng.integers(-10**6, 10**6, (4,)),
        "i32": rng.integers(-10**6, 10**6, (2, 2)).astype(np.int32),
        "i16": rng.integers(-3000, 3000, (3,)).astype(np.int16),
        "i8": rng.integers(-128, 127, (9,)).astype(np.int8),
        "u8": rng.integers(0, 255, (7,)).astype(np.uint8),
        "bool": rng.integers(0, 2, (5,)).astype(np.bool_),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((3, 0), np.float32),
    }
    path = os.path.join(tmp, "numpy.safetensors")
    np_save_file(arrays, path, metadata={"format": "np"})
    got = tool_read(path)
    check(sorted(got) == sorted(arrays), f"{path}: C++ names {sorted(got)}")
    for name, a in arrays.items():
        compare(path, got, name, {v: k for k, v in NP_DTYPES.items()}[a.dtype.type],
                a.shape, a.tobytes(), a.astype(np.float32))

    # torch writer, including bf16
    if torch is not None:
        torch.manual_seed(0)
        tensors = {
            "model.embed_tokens.weight": torch.randn(3, 5, 7).to(torch.bfloat16),
            "model.norm.weight": torch.randn(9).to(torch.float16),
            "lm_head.weight": torch.randn(4, 3),
            "ids": torch.arange(-5, 5, dtype=torch.int64),
            "mask": torch.tensor([True, False, True]),
            "zero": torch.zeros(0, 4, dtype=torch.bfloat16),
        }
        path = os.path.join(tmp, "torch.safetensors")
        torch_save_file(tensors, path, metadata={"format": "pt"})
        got = tool_read(path)
        check(sorted(got) == sorted(tensors), f"{path}: C++ names {sorted(got)}")
        names = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32",
                 torch.int64: "I64", torch.bool: "BOOL"}
        for name, t in tensors.items():
            raw = (t.view(torch.int16) if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
            compare(path, got, name, names[t.dtype], list(t.shape), raw.tobytes(), t.float().numpy())
    else:
        print("note: torch not importable, BF16 reverse check skipped")

    # By hand: F8_E4M3 (every code, NaNs included) and data at offsets that are not
    # multiples of the element size, which no Python writer produces.
    codes = np.arange(256, dtype=np.uint8)
    u8 = np.array([1, 2, 3], np.uint8)
    f32 = np.array([1.25, -7.5], np.float32)
    header = {"f8": {"dtype": "F8_E4M3", "shape": [16, 16], "data_offsets": [0, 256]},
              "u8": {"dtype": "U8", "shape": [3], "data_offsets": [256, 259]},
              "f32": {"dtype": "F32", "shape": [2], "data_offsets": [259, 267]}}
    text = json.dumps(header).encode()
    path = os.path.join(tmp, "handmade.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + codes.tobytes() + u8.tobytes() + f32.tobytes())
    got = tool_read(path)
    compare(path, got, "f8", "F8_E4M3", [16, 16], codes.tobytes(), [e4m3_to_f32(c) for c in range(8)])
    compare(path, got, "u8", "U8", [3], u8.tobytes(), u8)
    compare(path, got, "f32", "F32", [2], f32.tobytes(), f32)

    # A sharded directory as transformers lays it out.
    shard_dir = os.path.join(tmp, "hf_sharded")
    os.makedirs(shard_dir)
    parts = {"model-00001-of-00002.safetensors": {"a": np.arange(6, dtype=np.float32)},
             "model-00002-of-00002.safetensors": {"b": np.arange(4, dtype=np.int64),
                                                  "c": np.ones((2, 2), np.float16)}}
    weight_map = {}
    for fname, ts in parts.items():
        np_save_file(ts, os.path.join(shard_dir, fname))
        weight_map.update({k: fname for k in ts})
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 48}, "weight_map": weight_map}, f)
    got = tool_read(shard_dir)
    check(sorted(got) == ["a", "b", "c"], f"{shard_dir}: C++ names {sorted(got)}")
    for ts in parts.values():
        for name, a in ts.items():
            compare(shard_dir, got, name, {v: k for k, v in NP_DTYPES.items()}[a.dtype.type],
                    a.shape, a.tobytes(), a.astype(np.float32))


def main():
    with tempfile.TemporaryDirectory(prefix="qshard-io-py-") as tmp:
        check_forward(tmp)
        check_reverse(tmp)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("safetensors cross-check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
