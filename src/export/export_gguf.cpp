// GGUF export (formats.md E, docs/formats-gguf.md): one file OUT/model.gguf that llama.cpp loads, laid out as
// its convert_hf_to_gguf.py writes the family (gguf_arch.cpp: llama, qwen2, qwen3 and the
// MoE ones): the architecture's metadata, the tokenizer (gguf_vocab.cpp), tensors renamed
// to llama.cpp's names, experts stacked, and for llama q_proj/k_proj rows permuted into its
// rotary layout (LlamaModel.permute: within each head, row i·2 + j takes row
// j·head_dim/2 + i). A permutation of whole rows, like a stack of whole experts, moves each
// row's blocks unchanged, so the quantized codes are exactly those qshard chose.
// Quantized Linears are written in their llama.cpp block type (--format q4_0 ... q8_0);
// dense tensors as F32 (1-D: norms, as the converter does) or their stored float dtype.
// Tensors wait in spool files in OUT, not in memory, until finish writes the file from
// them (gguf_stream.h; with several ranks each owner spools, rank 0 writes).
// config.json and the tokenizer files are copied beside it (finish_output), config last.
#include <cmath>
#include <map>

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "export/export_common.h"
#include "export/gguf_arch.h"
#include "export/gguf_file.h"
#include "export/gguf_stream.h"
#include "export/gguf_vocab.h"
#include "quant/rtn.h"

namespace qshard::exporting {

namespace {

constexpr const char* kFileName = "model.gguf";

GgmlType block_type(const QuantFormat& f) {
  QS_ASSERT(f.is_ggml(), "not a GGML block format: ", f.name());
  if (f.family == FormatFamily::GgmlIQ4NL) return GgmlType::IQ4_NL;
  if (f.family == FormatFamily::GgmlIQ4XS) return GgmlType::IQ4_XS;
  if (f.family == FormatFamily::GgmlK)
    return f.bits == 2 ? GgmlType::Q2_K : f.bits == 3 ? GgmlType::Q3_K : f.bits == 4 ? GgmlType::Q4_K : f.bits == 5 ? GgmlType::Q5_K : GgmlType::Q6_K;
  if (f.bits == 8) return GgmlType::Q8_0;
  if (f.bits == 4) return f.symmetric ? GgmlType::Q4_0 : GgmlType::Q4_1;
  return f.symmetric ? GgmlType::Q5_0 : GgmlType::Q5_1;
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  QS_ASSERT(f16_to_f32(h) == v || (std::isnan(v) && std::isnan(f16_to_f32(h))),
            "GGML block parameter ", v, " is not an FP16 value");
  p[0] = uint8_t(h & 0xFF), p[1] = uint8_t(h >> 8);
}

// One row's 32-blocks in llama.cpp's layout (ggml-common.h block_q4_0 ... block_q8_0;
// block_iq4_nl is block_q4_0's: d, then codes j and j + 16 in one byte).
void encode_row(const QuantizedLinear& q, int64_t r, GgmlType type, uint8_t* out) {
  const int64_t in = q.in_features, ng = q.n_groups();
  const uint64_t bytes = ggml_row_bytes(type, 32);
  for (int64_t b = 0; b < ng; ++b) {
    uint8_t* blk = out + b * int64_t(bytes);
    const uint8_t* c = q.codes.data() + r * in + b * 32;
    put_f16(blk, q.scales[size_t(r * ng + b)]);
    uint8_t* qs = blk + 2;
    if (type == GgmlType::Q8_0) {
      for (int j = 0; j < 32; ++j) qs[j] = uint8_t(int8_t(int(c[j]) - 128));
      continue;
    }
    if (type == GgmlType::Q4_1 || type == GgmlType::Q5_1) {
      put_f16(blk + 2, q.zeros[size_t(r * ng + b)]);
      qs += 2;
    }
    if (type == GgmlType::Q5_0 || type == GgmlType::Q5_1) {
      uint32_t qh = 0;
      for (int j = 0; j < 32; ++j) qh |= uint32_t((c[j] >> 4) & 1) << j;
      for (int k = 0; k < 4; ++k) qs[k] = uint8_t(qh >> (8 * k));
      qs += 4;
    }
    for (int j = 0; j < 16; ++j) qs[j] = uint8_t((c[j] & 0xF) | ((c[j + 16] & 0xF) << 4));
  }
}

// A K-quant sub-block's integer scale code: its decoded scale over the super-block's d
// (exact, kquant.h); 0 where d is 0 (nothing decodes from it then).
int sub_code(float decoded, float d, int lo, int hi, const char* what) {
  if (d == 0.0f) return 0;
  const float c = decoded / d;
  QS_ASSERT(c == std::nearbyint(c) && c >= float(lo) && c <= float(hi), "K-quant ", what, " ",
            decoded, " is not an integer multiple (", lo, "..", hi, ") of its super-block's ", d);
  return int(c);
}

// 256 2-bit codes as block_q2_K / block_q3_K's qs[64]: byte j/4 + l of each 128 holds
// elements j + l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7.
void pack_2bit(const uint8_t* low, uint8_t* qs) {
  for (int j = 0; j < 256; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = uint8_t(low[j + l] | (low[j + l + 32] << 2) | (low[j + l + 64] << 4) | (low[j + l + 96] << 6));
}

// One row's 256-super-blocks (ggml-common.h block_q2_K ... block_q6_K).
void encode_row_k(const QuantizedLinear& q, int64_t r, GgmlType type, uint8_t* out) {
  const int64_t in = q.in_features, ng = q.n_groups(), nsb = in / 256, per = 256 / q.format.group_size;
  const uint64_t bytes = ggml_row_bytes(type, 256);
  for (int64_t b = 0; b < nsb; ++b) {
    uint8_t* blk = out + b * int64_t(bytes);
    std::memset(blk, 0, bytes);
    const uint8_t* L = q.codes.data() + r * in + b * 256;
    const float* sc = q.scales.data() + r * ng + b * per;
    const float d = q.super_scales[size_t((r * nsb + b) * 2)];
    if (type == GgmlType::IQ4_XS) {  // d scales_h(u16) scales_l[4] qs[128]; sub-block code l + 32
      put_f16(blk, d);
      uint16_t h = 0;
      for (int ib = 0; ib < 8; ++ib) {
        const int l = sub_code(sc[ib], d, -32, 31, "scale") + 32;
        blk[4 + ib / 2] |= uint8_t((l & 0xF) << (4 * (ib % 2)));
        h = uint16_t(h | ((l >> 4) << (2 * ib)));
      }
      blk[2] = uint8_t(h & 0xFF), blk[3] = uint8_t(h >> 8);
      for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 16; ++j) blk[8 + 16 * i + j] = uint8_t(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
      continue;
    }
    if (type == GgmlType::Q3_K) {  // hmask[32] qs[64] scales[12] d
      uint8_t* hmask = blk;
      uint8_t* qs = blk + 32;
      uint8_t* s = blk + 96;
      uint8_t low[256];
      for (int j = 0, m = 0, hm = 1; j < 256; ++j) {
        low[j] = L[j];
        if (L[j] > 3) hmask[m] |= uint8_t(hm), low[j] = uint8_t(L[j] - 4);
        if (++m == 32) m = 0, hm <<= 1;
      }
      pack_2bit(low, qs);
      for (int j = 0; j < 16; ++j) {
        int l = sub_code(sc[j], d, -32, 31, "scale") + 32;
        if (j < 8) s[j] = uint8_t(l & 0xF);
        else s[j - 8] |= uint8_t((l & 0xF) << 4);
        l >>= 4;
        s[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
      }
      put_f16(blk + 108, d);
      continue;
    }
    if (type == GgmlType::Q6_K) {
      uint8_t* ql = blk;
      uint8_t* qh = blk + 128;
      for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; ++l) {
          ql[l] = uint8_t((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
          ql[l + 32] = uint8_t((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
          qh[l] = uint8_t((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                          ((L[j + l + 96] >> 4) << 6));
        }
      for (int j = 0; j < 16; ++j) blk[192 + j] = uint8_t(int8_t(sub_code(sc[j], d, -128, 127, "scale")));
      put_f16(blk + 208, d);
      continue;
    }
    const float dmin = q.super_scales[size_t((r * nsb + b) * 2 + 1)];
    const float* mn = q.zeros.data() + r * ng + b * per;
    if (type == GgmlType::Q2_K) {  // scales[16] (4-bit sc | m << 4) qs[64] d dmin
      for (int j = 0; j < 16; ++j)
        blk[j] = uint8_t(sub_code(sc[j], d, 0, 15, "scale") | (sub_code(mn[j], dmin, 0, 15, "min") << 4));
      pack_2bit(L, blk + 16);
      put_f16(blk + 80, d);
      put_f16(blk + 82, dmin);
      continue;
    }
    put_f16(blk, d);
    put_f16(blk + 2, dmin);
    uint8_t* s = blk + 4;
    for (int j = 0; j < 8; ++j) {
      const int ls = sub_code(sc[j], d, 0, 63, "scale"), lm = sub_code(mn[j], dmin, 0, 63, "min");
      if (j < 4) {
        s[j] = uint8_t(ls), s[j + 4] = uint8_t(lm);
      } else {
        s[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
        s[j - 4] |= uint8_t((ls >> 4) << 6);
        s[j] |= uint8_t((lm >> 4) << 6);
      }
    }
    if (type == GgmlType::Q4_K) {
      uint8_t* qs = blk + 16;
      for (int j = 0; j < 256; j += 64, qs += 32)
        for (int l = 0; l < 32; ++l) qs[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
      continue;
    }
    uint8_t* qh = blk + 16;
    uint8_t* ql = blk + 48;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < 256; n += 64, ql += 32, m1 <<= 2, m2 <<= 2)
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) l1 -= 16, qh[j] |= m1;
        if (l2 > 15) l2 -= 16, qh[j] |= m2;
        ql[j] = uint8_t(l1 | (l2 << 4));
      }
  }
}

// LlamaModel.permute's row order for `rows` rows in `heads` heads: result row -> source row.
std::vector<int64_t> rope_rows(int64_t rows, int64_t heads) {
  QS_ASSERT(heads > 0 && rows % (2 * heads) == 0, "rows ", rows, " heads ", heads);
  const int64_t hd = rows / heads, half = hd / 2;
  std::vector<int64_t> src(static_cast<size_t>(rows));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) src[size_t(h * hd + i * 2 + j)] = h * hd + j * half + i;
  return src;
}

std::vector<uint8_t> dense_bytes(const Tensor& t, GgmlType type) {
  const Tensor f = t.dtype() == DType::F32 ? t : t.to_f32();
  const float* p = f.data<float>();
  const int64_t n = f.numel();
  std::vector<uint8_t> out;
  if (type == GgmlType::F32) {
    out.resize(size_t(n) * 4);
    std::memcpy(out.data(), p, out.size());
    return out;
  }
  out.resize(size_t(n) * 2);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = type == GgmlType::F16 ? f32_to_f16(p[i]) : f32_to_bf16(p[i]);
    out[size_t(2 * i)] = uint8_t(h & 0xFF), out[size_t(2 * i + 1)] = uint8_t(h >> 8);
  }
  return out;
}

// The type an unquantized tensor is written in: 1-D (norms) F32, as the converter does;
// 2-D ones by --gguf-dense (auto: their stored dtype).
GgmlType dense_type(const Tensor& t, const std::string& dense) {
  if (t.ndim() < 2) return GgmlType::F32;
  const DType d = dense == "f16" ? DType::F16 : dense == "bf16" ? DType::BF16 : dense == "f32" ? DType::F32 : t.dtype();
  return d == DType::F16 ? GgmlType::F16 : d == DType::BF16 ? GgmlType::BF16 : GgmlType::F32;
}

// A quantized Linear's rows in its llama.cpp block type, in the module's own row order
// (the rope permutation is applied when the file is written).
std::vector<uint8_t> block_bytes(const std::string& module, const QuantizedLinear& q) {
  const GgmlType type = block_type(q.format);
  const uint64_t row_bytes = ggml_row_bytes(type, q.in_features);
  std::vector<uint8_t> data(size_t(row_bytes * uint64_t(q.out_features)));
  const bool k = q.format.ggml_block() == 256;  // K-quants, IQ4_XS
  if (k && q.super_scales.size() != size_t(q.out_features * (q.in_features / 256) * 2))
    fail("internal error: module ", module, ": K-quant without its super-block scales (",
         q.super_scales.size(), " values)");
  for (int64_t r = 0; r < q.out_features; ++r)
    (k ? encode_row_k : encode_row)(q, r, type, data.data() + r * row_bytes);
  return data;
}

// Tensors stream to disk as they arrive (gguf_stream.h): a 70B model's bytes are never all
// in memory. With several ranks each tensor's owner spools it and rank 0 writes the file.
class GgufExporter final : public Exporter {
 public:
  GgufExporter(const std::string& out_dir, const WriteSplit* split)
      : out_dir_(out_dir), stream_(out_dir, kFileName, split) {}

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_, "add_dense after finish");
    stream_.add_dense(name, t);
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_, "add_quantized after finish");
    try {
      check_export_supports(ExportKind::Gguf, q.format, false);
    } catch (const InputError& e) {
      fail_input("module ", module, ": ", e.what());
    }
    if (q.has_act_order_g_idx())
      fail_input("module ", module, ": --export gguf stores each row's blocks in column order; "
                 "act-order without --static-groups scatters them (add --static-groups)");
    stream_.add_encoded(module + ".weight", {q.out_features, q.in_features}, block_type(q.format), [&] {
      validate_quantized(module, q);
      return block_bytes(module, q);
    });
  }

  // Collective: every rank encodes its dense tensors and hands its list to rank 0, which
  // writes the header and copies the tensors into place.
  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_, "finish called twice");
    finished_ = true;
    stream_.encode_dense([&](const std::string& name, const Tensor& t) { return encode_dense(name, t, info); });
    const std::vector<GgufStream::Placed> placed = stream_.gather();
    if (!stream_.writes_file()) return;
    try {
      const nlohmann::json config = read_source_config(info.source_model_dir);
      GgufFile file;
      const GgufModel model = gguf_model_metadata(config, info, file);
      write_tokenizer(info.source_model_dir, config, file);
      ExpertStacks experts;  // an expert's slice waits for its stack, written after the rest
      for (const GgufStream::Placed& p : placed) {
        if (const auto slot = gguf_expert_slot(p.name)) {
          experts.add(*slot, p.shape, p.type, p.where);
          continue;
        }
        const std::string g = mapped(p.name);
        GgufExtent where = p.where;
        where.order = rope_order(model, g, p.shape[0]);
        file.add_tensor_at(g, p.shape, p.type, std::move(where));
      }
      experts.write(file, model.n_experts);
      const std::string path = out_dir_ + "/" + kFileName;
      finish_output(out_dir_, info, [&] {
        file.write(path);
        stream_.remove_spools();
      }, nullptr);
    } catch (...) {
      stream_.remove_spools();  // nothing to resume from them: a rerun replays the calls
      throw;
    }
  }

 private:
  std::vector<int64_t> rope_order(const GgufModel& m, const std::string& gname, int64_t rows) const {
    if (!m.arch->permute_qk) return {};
    if (gname.find(".attn_q.") != std::string::npos) return rope_rows(rows, m.n_head);
    if (gname.find(".attn_k.") != std::string::npos) return rope_rows(rows, m.n_head_kv);
    return {};
  }

  std::string mapped(const std::string& name) const {
    if (const auto slot = gguf_expert_slot(name)) return slot->name;
    const std::string g = gguf_tensor_name(name);
    if (g.empty())
      fail_input("--export gguf: tensor ", name, " has no llama.cpp name (the GGUF export "
                 "writes Llama, Mistral, Qwen2, Qwen3 and their MoE checkpoints: embed_tokens, "
                 "layers.N.{input_layernorm, post_attention_layernorm, self_attn.{q,k,v,o}_proj, "
                 "self_attn.{q,k}_norm, mlp.{gate,up,down}_proj, the experts and routers}, norm, lm_head)");
    return g;
  }

  // A dense tensor as the file stores it: a llama.cpp mix's quantized embeddings/output
  // (info.gguf_dense_types, llama.cpp's reference rounding), else F32/F16/BF16.
  static GgufStream::Encoded encode_dense(const std::string& name, const Tensor& t, const ExportInfo& info) {
    const auto it = info.gguf_dense_types.find(name);
    if (it != info.gguf_dense_types.end() && it->second != "f16" && t.ndim() == 2) {
      const QuantizedLinear q = rtn_quantize(t, *Scheme::make(QuantFormat::parse(it->second, 0, true)), {}, name);
      const std::string module = name.substr(0, name.size() - 7);  // drop ".weight"
      return {block_type(q.format), block_bytes(module, q)};
    }
    const GgmlType type = dense_type(t, it != info.gguf_dense_types.end() ? "f16" : info.gguf_dense);
    return {type, dense_bytes(t, type)};
  }

  std::string out_dir_;
  GgufStream stream_;
  bool finished_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_gguf_exporter(const std::string& out_dir, const WriteSplit* split) {
  return std::make_unique<GgufExporter>(out_dir, split);
}

}  // namespace qshard::exporting
