"""Every row of docs/errors.md, provoked for real: each bad input ends qshard with exit
code 2, exactly one "qshard: error:" line on stderr naming the file, tensor or option
(checked against a pattern), and an output directory that does not look finished (no
config.json, no final weight file names). Broken checkpoints are made from copies of
the bundled tiny model, with the header rewritten by hand (not by our writer)."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checklib import MODEL, MPIRUN, QBIN, check, verdict  # noqa: E402
CALIB = os.path.join(MODEL, "text", "calib.txt")
rows = []


def looks_finished(out):
    if not os.path.isdir(out):
        return []
    names = os.listdir(out)
    return [n for n in names if n == "config.json" or re.fullmatch(r"model.*\.safetensors(\.index\.json)?|model\.h5", n)]


def tree(path):
    """Every path under `path` with its size, or None if it does not exist."""
    if not os.path.exists(path):
        return None
    return sorted((os.path.relpath(os.path.join(d, n), path), os.path.getsize(os.path.join(d, n)))
                  for d, _, names in os.walk(path) for n in names)


def expect(row, pattern, args, out=None, prefix=None, code=2, env=None, shell_prefix=None, may_keep=False):
    """Runs qshard ARGS; wants `code`, one error line matching `pattern`, nothing finished,
    and `out` as it was before (absent if it was) unless `may_keep` (a layer may have
    finished: that run is resumable)."""
    rows.append(row)
    before = tree(out) if out else None
    cmd = (prefix or []) + [QBIN] + args
    e = dict(os.environ)
    e.update(env or {})
    if shell_prefix:
        cmd = ["bash", "-c", shell_prefix + ' && exec "$@"', "sh"] + cmd
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    errs = [l for l in p.stderr.splitlines() if l.startswith("qshard: error:")]
    # Under mpirun the launcher adds its own lines; without it stderr is the one line.
    others = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("qshard: error:")]
    ok = (p.returncode == code and len(errs) == 1 and re.search(pattern, errs[0]) is not None
          and (prefix is not None or not others))
    leftover = looks_finished(out) if out else []
    after = tree(out) if out else None
    changed = out is not None and not may_keep and after != before
    check(ok and not leftover and not changed, f"[{row}] rc {p.returncode}, {errs or p.stderr.strip()[-300:]}"
          + (f", stray stderr {others[:3]}" if others and prefix is None else "")
          + (f", looks finished: {leftover}" if leftover else "")
          + (f", OUT left changed: {before} -> {after}" if changed else ""))
    return p


def copy_model(t, name):
    d = os.path.join(t, name)
    shutil.copytree(MODEL, d)
    return d


def read_st(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(path, header_text, data):
    hb = header_text.encode() if isinstance(header_text, str) else header_text
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)


def edit_header(d, fn):
    p = os.path.join(d, "model.safetensors")
    h, data = read_st(p)
    out = fn(h, data)
    if isinstance(out, tuple):
        h, data = out
    write_st(p, json.dumps(h) if isinstance(h, dict) else h, data)


def quantize(model, out, *extra):
    return ["quantize", "--model", model, "--out", out, "--calib", CALIB, "--n-calib", "4",
            "--calib-seqlen", "64", "--quiet"] + list(extra)


def bf16_bytes(n, scale, rng):
    """n bf16 values: a random block of normals (times `scale`), tiled."""
    block = b"".join(struct.pack("<f", rng.gauss(0.0, scale))[2:] for _ in range(4096))
    return (block * (n // 4096 + 1))[:2 * n]


def write_model(d, hidden, intermediate, heads, kv_heads, vocab=256, layers=1):
    """A random-weight Llama of this geometry (no tokenizer: calibrate on token files)."""
    import random
    rng = random.Random(0)
    os.makedirs(d)
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    head_dim = hidden // heads
    cfg.update(hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads,
               num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab, num_hidden_layers=layers)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden], "lm_head.weight": [vocab, hidden]}
    for l in range(layers):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": [hidden], p + "post_attention_layernorm.weight": [hidden],
                       p + "self_attn.q_proj.weight": [hidden, hidden],
                       p + "self_attn.k_proj.weight": [kv_heads * head_dim, hidden],
                       p + "self_attn.v_proj.weight": [kv_heads * head_dim, hidden],
                       p + "self_attn.o_proj.weight": [hidden, hidden],
                       p + "mlp.gate_proj.weight": [intermediate, hidden], p + "mlp.up_proj.weight": [intermediate, hidden],
                       p + "mlp.down_proj.weight": [hidden, intermediate]})
    header, blobs, offset = {}, [], 0
    for name, shape in shapes.items():
        n = 1
        for x in shape:
            n *= x
        blob = struct.pack("<H", 0x3F80) * n if "norm" in name else bf16_bytes(n, 0.02, rng)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    write_st(os.path.join(d, "model.safetensors"), json.dumps(header), b"".join(blobs))


def group_size_suggestions(t, out):
    """SmolLM2-135M's shapes (hidden 576, intermediate 1536): 288 divides 576 but not 1536,
    so the suggestion must be sizes that divide both, and the largest must work."""
    d = os.path.join(t, "h576")
    write_model(d, hidden=576, intermediate=1536, heads=9, kv_heads=3)
    calib = os.path.join(t, "h576.tokens")
    open(calib, "wb").write(struct.pack("<256i", *[(7 * i) % 256 for i in range(256)]))
    q = lambda name, *extra: ["quantize", "--model", d, "--out", out(name), "--calib", calib, "--n-calib", "4",  # noqa: E731
                              "--calib-seqlen", "64", "--quiet", "--method", "rtn"] + list(extra)
    want = r"\(576, 1536\): 192, 96, 64, 48, 32 or 24, or -1 for per-channel"
    expect("group size divides some matrices, not all", r"down_proj\.weight: in_features 1536 .* group size 288 .*" + want,
           q("g288", "--group-size", "288"), out("g288"))
    expect("default group size 128 on hidden 576", r"q_proj\.weight: in_features 576 .* group size 128 .*" + want,
           q("g128"), out("g128"))
    p = subprocess.run([QBIN] + q("g192", "--group-size", "192"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check(p.returncode == 0 and os.path.exists(os.path.join(out("g192"), "config.json")),
          f"the largest suggested group size (192) quantizes: rc {p.returncode} {p.stderr.strip()[-300:]}")


def main():
    t = tempfile.mkdtemp(prefix="qshard-errors-")
    try:
        out = lambda name: os.path.join(t, "out-" + name)  # noqa: E731

        # ---- model directory and config.json
        expect("model directory missing", r"nope: no such model directory: check --model",
               quantize(os.path.join(t, "nope"), out("a")), out("a"))
        d = copy_model(t, "noconfig")
        os.remove(os.path.join(d, "config.json"))
        expect("config.json missing", r"config\.json", quantize(d, out("b")), out("b"))
        d = copy_model(t, "badjson")
        open(os.path.join(d, "config.json"), "w").write('{"model_type": "llama", "hidden_size": ')
        expect("config.json not valid JSON", r"config\.json.*(JSON|parse)", quantize(d, out("c")), out("c"))
        d = copy_model(t, "nofield")
        cfg = json.load(open(os.path.join(MODEL, "config.json")))
        del cfg["hidden_size"]
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        expect("config.json lacks a field", r"config\.json.*hidden_size", quantize(d, out("d")), out("d"))
        d = copy_model(t, "badtype")
        cfg = json.load(open(os.path.join(MODEL, "config.json")))
        cfg["model_type"] = "gpt_neox"
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        expect("unknown model_type", r'model_type "gpt_neox" is not supported', quantize(d, out("e")), out("e"))

        # ---- tensors
        d = copy_model(t, "missing")
        # Removed with its bytes, so the file itself stays valid.
        h, data = read_st(os.path.join(MODEL, "model.safetensors"))
        name = "model.layers.2.mlp.up_proj.weight"
        b, e = h[name]["data_offsets"]
        del h[name]
        for k, v in h.items():
            if k != "__metadata__" and v["data_offsets"][0] >= e:
                v["data_offsets"] = [v["data_offsets"][0] - (e - b), v["data_offsets"][1] - (e - b)]
        write_st(os.path.join(d, "model.safetensors"), json.dumps(h), data[:b] + data[e:])
        expect("missing tensor", r"model\.layers\.2\.mlp\.up_proj\.weight", quantize(d, out("f")), out("f"))

        d = copy_model(t, "shape")
        def reshape(h, data):
            h["model.layers.1.self_attn.o_proj.weight"]["shape"] = [128, 512]
            return h, data
        edit_header(d, reshape)
        expect("wrong shape", r"model\.layers\.1\.self_attn\.o_proj\.weight.*\[128, 512\]", quantize(d, out("g")), out("g"))

        # ---- safetensors container
        d = copy_model(t, "hdrlen")
        p = os.path.join(d, "model.safetensors")
        raw = bytearray(open(p, "rb").read())
        raw[:8] = struct.pack("<Q", len(raw))
        open(p, "wb").write(raw)
        expect("header length past the end", r"model\.safetensors.*header", quantize(d, out("h")), out("h"))

        d = copy_model(t, "overlap")
        def overlap(h, data):
            k = "model.layers.0.self_attn.k_proj.weight"
            b0, e0 = h[k]["data_offsets"]
            h[k]["data_offsets"] = [b0 - 2, e0 - 2]
            return h, data
        edit_header(d, overlap)
        expect("overlapping data offsets", r"model\.safetensors.*overlap", quantize(d, out("i")), out("i"))

        d = copy_model(t, "range")
        def out_of_range(h, data):
            k = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][1])
            b0, e0 = h[k]["data_offsets"]
            h[k]["data_offsets"] = [b0 + 64, e0 + 64]
            return h, data
        edit_header(d, out_of_range)
        expect("data offsets out of range", r"model\.safetensors.*past the end", quantize(d, out("j")), out("j"))

        d = copy_model(t, "dtype")
        def bad_dtype(h, data):
            h["model.norm.weight"]["dtype"] = "Q4_K"
            return h, data
        edit_header(d, bad_dtype)
        expect("unknown dtype", r"model\.norm\.weight.*Q4_K", quantize(d, out("k")), out("k"))

        d = copy_model(t, "hdrjson")
        h, data = read_st(os.path.join(MODEL, "model.safetensors"))
        text = json.dumps(h)
        write_st(os.path.join(d, "model.safetensors"), text[:-5] + "     ", data)
        expect("header is not valid JSON", r"model\.safetensors.*not valid JSON", quantize(d, out("l")), out("l"))

        d = copy_model(t, "dup")
        h, data = read_st(os.path.join(MODEL, "model.safetensors"))
        text = json.dumps(h)
        entry = '"model.norm.weight": ' + json.dumps(h["model.norm.weight"])
        write_st(os.path.join(d, "model.safetensors"), text[:-1] + ", " + entry + "}", data)
        expect("duplicate tensor names", r"model\.safetensors.*model\.norm\.weight.*more than once", quantize(d, out("m")), out("m"))

        d = copy_model(t, "trunc")
        p = os.path.join(d, "model.safetensors")
        raw = open(p, "rb").read()
        open(p, "wb").write(raw[:len(raw) * 2 // 3])
        expect("shard truncated mid-tensor", r"model\.safetensors.*(truncated|past the end)", quantize(d, out("n")), out("n"))

        d = copy_model(t, "index")
        os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "model-00001-of-00002.safetensors"))
        h, _ = read_st(os.path.join(d, "model-00001-of-00002.safetensors"))
        wm = {k: "model-00001-of-00002.safetensors" for k in h if k != "__metadata__"}
        wm["model.norm.weight"] = "model-00002-of-00002.safetensors"
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
        expect("index names a missing shard", r"model-00002-of-00002\.safetensors", quantize(d, out("o")), out("o"))

        # ---- NaN / Inf in weights: named with the first bad index
        for row, value, label in (("NaN in a weight", 0x7FC0, "NaN"), ("Inf in a weight", 0x7F80, "Inf")):
            d = copy_model(t, "nan" + label)
            h, data = read_st(os.path.join(MODEL, "model.safetensors"))
            k = "model.layers.1.mlp.gate_proj.weight"
            assert h[k]["dtype"] == "BF16"
            b0 = h[k]["data_offsets"][0]
            cols = h[k]["shape"][1]
            idx = 3 * cols + 17
            data = bytearray(data)
            data[b0 + 2 * idx:b0 + 2 * idx + 2] = struct.pack("<H", value)
            write_st(os.path.join(d, "model.safetensors"), json.dumps(h), bytes(data))
            expect(row, rf"model\.layers\.1\.mlp\.gate_proj\.weight.*{label}.*\[3, 17\]", quantize(d, out("p" + label)),
                   out("p" + label), may_keep=True)

        # NaN in the embeddings: found after OUT is made, before any layer. The run removes
        # what it created: all of a new OUT; in an existing OUT only its own entries.
        d = copy_model(t, "nanembed")
        h, data = read_st(os.path.join(MODEL, "model.safetensors"))
        b0 = h["model.embed_tokens.weight"]["data_offsets"][0]
        data = bytearray(data)
        data[b0 + 2 * 5:b0 + 2 * 5 + 2] = struct.pack("<H", 0x7FC0)
        write_st(os.path.join(d, "model.safetensors"), json.dumps(h), bytes(data))
        expect("refused after OUT was made: OUT removed", r"model\.embed_tokens\.weight.*NaN",
               quantize(d, out("nanembed")), out("nanembed"))
        os.makedirs(out("kept"))
        open(os.path.join(out("kept"), "notes.txt"), "w").write("the user's own file\n")
        expect("refused after OUT was made: an existing OUT is left as it was", r"model\.embed_tokens\.weight.*NaN",
               quantize(d, out("kept")), out("kept"))

        # ---- options
        expect("group size does not divide in_features",
               r"q_proj\.weight: in_features 256 .* group size 96 .*every quantized matrix \(256, 768\): 256, 128, 64, 32, 16 or 8, or -1",
               quantize(MODEL, out("q"), "--group-size", "96"), out("q"))
        group_size_suggestions(t, out)
        expect("unknown format", r"--format", quantize(MODEL, out("q2"), "--format", "int9"), out("q2"))
        expect("format the export cannot hold", r"--export gptq", quantize(MODEL, out("q3"), "--format", "mxfp4"), out("q3"))
        # ---- --target-bpw (mixed precision)
        expect("--target-bpw below the cheapest candidates", r"--target-bpw 3 is below 3\.25 bits per weight",
               quantize(MODEL, out("bpw1"), "--target-bpw", "3"), out("bpw1"))
        expect("a --bpw-formats group that does not divide a module",
               r"--bpw-formats: int4 g96 sym does not divide model\.layers\.0\.self_attn\.q_proj\.weight \(256",
               quantize(MODEL, out("bpw2"), "--target-bpw", "5", "--bpw-formats", "int4:g64,int4:g96"), out("bpw2"))
        expect("--target-bpw with an export of one format", r"--target-bpw with --export awq: .*--export gptq",
               quantize(MODEL, out("bpw3"), "--target-bpw", "4.5", "--asym", "--export", "awq"), out("bpw3"))
        expect("a --bpw-formats candidate the export cannot hold", r"--bpw-formats int3 g64 sym: --export compressed-tensors",
               quantize(MODEL, out("bpw4"), "--target-bpw", "4.5", "--bpw-formats", "int3:g64,int4:g64",
                        "--export", "compressed-tensors"), out("bpw4"))
        expect("--bpw-formats without --target-bpw", r"--bpw-formats lists the candidates of --target-bpw",
               quantize(MODEL, out("bpw5"), "--bpw-formats", "int4:g64"), out("bpw5"))
        expect("--device cuda without a GPU or CUDA build", r"--device cuda",
               quantize(MODEL, out("r"), "--device", "cuda"), out("r"))
        expect("--device cuda without a GPU (eval)", r"--device cuda",
               ["eval", "--model", MODEL, "--text", CALIB, "--device", "cuda", "--quiet"])

        # ---- calibration
        short = os.path.join(t, "short.txt")
        open(short, "w").write(open(CALIB).read()[:400])  # 1-3 windows of 64 tokens, not 4
        expect("calibration text too short for N x S tokens", r"short\.txt: \d+ tokens, too few for --n-calib 4",
               quantize(MODEL, out("s"))[:6] + [short, "--n-calib", "4", "--calib-seqlen", "64", "--quiet"], out("s"))
        open(short, "w").write("A few words only.")
        expect("calibration text shorter than one window", r"short\.txt: \d+ tokens, fewer than one calibration window",
               quantize(MODEL, out("s2"))[:6] + [short, "--quiet"], out("s2"))
        expect("calibration file missing", r"nope\.txt: cannot (read|open).*check the path", quantize(MODEL, out("t"))[:6]
               + [os.path.join(t, "nope.txt"), "--quiet"], out("t"))
        d = copy_model(t, "notok")
        os.remove(os.path.join(d, "tokenizer.model"))
        expect("missing tokenizer", r"tokenizer", quantize(d, out("u")), out("u"))
        odd = os.path.join(t, "odd.tokens")
        open(odd, "wb").write(b"\x01\x00\x00\x00\x02\x00")
        expect("token file not whole int32s", r"odd\.tokens", quantize(MODEL, out("v"))[:6] + [odd, "--quiet"], out("v"))
        big = os.path.join(t, "big.tokens")
        open(big, "wb").write(struct.pack("<" + "i" * 300, *([5] * 299 + [999999])))
        expect("token id outside the vocabulary", r"big\.tokens.*999999",
               quantize(MODEL, out("w"))[:6] + [big, "--n-calib", "4", "--calib-seqlen", "64", "--quiet"], out("w"))
        ids = os.path.join(t, "ids.dat")
        shutil.copy(big, ids)
        expect("token ids in a file not named *.tokens / *.bin", r"ids\.dat: is not UTF-8 text.*\*\.tokens or \*\.bin",
               quantize(MODEL, out("w2"))[:6] + [ids, "--quiet"], out("w2"))
        text_tokens = os.path.join(t, "text.tokens")
        shutil.copy(CALIB, text_tokens)
        expect("text in a file named *.tokens", r"text\.tokens: looks like text, not a token file",
               quantize(MODEL, out("w3"))[:6] + [text_tokens, "--quiet"], out("w3"))

        # ---- output directory
        ro = os.path.join(t, "ro")
        os.makedirs(ro)
        os.chmod(ro, 0o555)
        if os.geteuid() != 0:
            expect("unwritable output directory", r"ro/x", quantize(MODEL, os.path.join(ro, "x")), os.path.join(ro, "x"))
        else:
            # root writes anywhere: a path under a regular file cannot be created either.
            blocker = os.path.join(t, "file")
            open(blocker, "w").write("x")
            expect("unwritable output directory", r"--out .*file/x.*cannot create.*write to",
                   quantize(MODEL, os.path.join(blocker, "x")))
        expect("output is the model directory", r"input model directory", quantize(MODEL, MODEL))
        # 4 MB: enough for MPI's own start-up files, not for the 5.9 MB model.safetensors.
        expect("file size limit (ulimit -f)", r"file size limit reached while writing .*out-full.*ulimit",
               quantize(MODEL, out("full")), out("full"), shell_prefix="ulimit -f 4096", may_keep=True)
        small = os.path.join(t, "small-fs")
        os.makedirs(small)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small], stderr=subprocess.DEVNULL).returncode == 0:
            try:
                expect("disk full", r"no space left on device while .*small-fs/out.*free space",
                       quantize(MODEL, os.path.join(small, "out")), os.path.join(small, "out"), may_keep=True)
            finally:
                subprocess.run(["umount", small])
        else:
            print("skip: disk full on a small tmpfs (mount not permitted here); ulimit -f covers the write path")
        p = subprocess.run([QBIN] + quantize(MODEL, out("done")), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        check(p.returncode == 0, "a finished run for the next row")
        rows.append("output holds a finished checkpoint of another command")
        p = subprocess.run([QBIN] + quantize(MODEL, out("done"), "--format", "int8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        check(p.returncode == 2 and "already holds" in p.stderr and len(p.stderr.strip().splitlines()) == 1,
              f"[finished OUT, other command] {p.stderr.strip()}")

        # ---- ranks
        if shutil.which("mpirun"):
            expect("more ranks than calibration windows", r"--n-calib 2.*3 ranks",
                   quantize(MODEL, out("x"))[:-5] + ["--n-calib", "2", "--calib-seqlen", "64", "--quiet"],
                   out("x"), prefix=MPIRUN + ["-np", "3"])
    finally:
        shutil.rmtree(t, ignore_errors=True)
    print(f"{len(rows)} situations checked")
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
