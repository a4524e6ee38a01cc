#include "export/export_common.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/dtype.h"
#include "core/error.h"
#include "core/test_hooks.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "quant/scheme.h"

#ifndef QSHARD_VERSION
#define QSHARD_VERSION "0.0.0"
#endif

namespace qshard::exporting {

namespace fs = std::filesystem;

namespace {

// Top-level files of a model directory that are weights or quantization metadata of the
// source: never copied (they would be read together with, or instead of, ours).
bool is_weight_or_quant_file(const std::string& f) {
  auto ends = [&f](const char* suffix) { return f.ends_with(suffix); };
  return ends(".safetensors") || ends(".safetensors.index.json") || ends(".bin") ||
         ends(".bin.index.json") || ends(".pt") || ends(".pth") || ends(".ckpt") ||
         ends(".h5") || ends(".msgpack") || ends(".gguf") || ends(".onnx") || ends(".tmp") ||
         f == "config.json" || f == "quantize_config.json" || f == "hf_quant_config.json" ||
         f == "quantize_report.json" || f.starts_with(".");
}

}  // namespace

nlohmann::json read_source_config(const std::string& source_dir) {
  if (source_dir.empty())
    fail("export: ExportInfo.source_model_dir is empty; config.json and the tokenizer are "
         "copied from there");
  const std::string path = (fs::path(source_dir) / "config.json").string();
  if (!path_exists(path))
    fail_input(path, ": not found; the export copies the source model's config.json");
  nlohmann::json cfg = read_json_file(path);
  if (!cfg.is_object()) fail_input(path, ": expected a JSON object");
  return cfg;
}

void finish_output(const std::string& out_dir, const ExportInfo& info,
                   const std::function<void()>& commit_weights,
                   const nlohmann::json& quantization_config,
                   const std::vector<std::pair<std::string, std::string>>& extra_files,
                   const nlohmann::json& extra_config) {
  // 1. Everything that can be refused is refused before anything gets a final name.
  nlohmann::json cfg = read_source_config(info.source_model_dir);
  const std::string src_config_path = (fs::path(info.source_model_dir) / "config.json").string();
  std::error_code ec;
  if (fs::equivalent(fs::path(out_dir), fs::path(info.source_model_dir), ec))
    fail_input("the output directory ", out_dir, " is the source model directory: choose "
               "another one (the export would overwrite the source weights)");
  std::string config_text;
  if (quantization_config.is_null() && extra_config.is_null()) {
    config_text = read_text_file(src_config_path);  // unchanged, byte for byte
  } else {
    if (!quantization_config.is_null()) cfg["quantization_config"] = quantization_config;
    if (extra_config.is_object())
      for (const auto& [k, v] : extra_config.items()) cfg[k] = v;
    config_text = cfg.dump(2) + "\n";
  }
  std::vector<std::string> to_copy;
  for (const auto& e : fs::directory_iterator(info.source_model_dir, ec)) {
    const std::string f = e.path().filename().string();
    std::error_code ec2;
    if (!fs::is_regular_file(e.path(), ec2) || is_weight_or_quant_file(f)) continue;
    to_copy.push_back(f);
  }
  if (ec) fail_input("cannot list ", info.source_model_dir, ": ", ec.message());

  // 2. A config.json of an earlier run would make a half-replaced directory look done.
  const std::string config_path = (fs::path(out_dir) / "config.json").string();
  if (::unlink(config_path.c_str()) != 0 && errno != ENOENT)
    io_fail(errno, "removing the stale", config_path);
  fsync_dir(out_dir);

  // 3. Weights.
  commit_weights();
  test_kill_point("export");

  // 4. Tokenizer, generation config, chat template, ...
  for (const auto& f : to_copy) {
    const std::string src = (fs::path(info.source_model_dir) / f).string();
    const std::string dst = (fs::path(out_dir) / f).string();
    const std::string tmp = temp_path_for(dst);
    std::error_code cec;
    fs::copy_file(src, tmp, fs::copy_options::overwrite_existing, cec);
    if (cec) {
      ::unlink(tmp.c_str());
      fail_input("copying ", src, " to ", out_dir, " failed: ", cec.message());
    }
    fsync_file(tmp);
    rename_into_place(tmp, dst);
  }

  // 5, 6. Metadata, config.json last.
  for (const auto& [name, text] : extra_files)
    write_file_atomic((fs::path(out_dir) / name).string(), text);
  write_file_atomic(config_path, config_text);
  fsync_dir(out_dir);
}

// ------------------------------------------------------------ QuantizedLinear checks

void validate_quantized(const std::string& module, const QuantizedLinear& q) {
  const QuantFormat& f = q.format;
  auto bad = [&module](auto&&... parts) {
    fail("internal error: quantized module ", module, ": ", parts...);
  };
  if (q.out_features <= 0 || q.in_features <= 0)
    bad("shape [", q.out_features, ", ", q.in_features, "]");
  if (f.bits < 2 || f.bits > 8) bad("bits ", f.bits);
  const int64_t gw = f.group_width(q.in_features);
  if (gw <= 0 || q.in_features % gw != 0)
    bad("in_features ", q.in_features, " is not a multiple of the group size ", gw);
  const int64_t ng = q.in_features / gw;
  const int64_t n = q.out_features * q.in_features;
  if (int64_t(q.codes.size()) != n) bad(q.codes.size(), " codes, expected ", n);
  if (int64_t(q.scales.size()) != q.out_features * ng)
    bad(q.scales.size(), " scales, expected ", q.out_features * ng);
  const bool ggml = f.is_ggml();
  const bool need_zeros = f.stores_zeros() && !f.symmetric;
  if (need_zeros && int64_t(q.zeros.size()) != q.out_features * ng)
    bad(q.zeros.size(), " zero points, expected ", q.out_features * ng);
  if (!f.stores_zeros() && !q.zeros.empty()) bad("zero points on a ", f.name(), " module");
  if (f.family == FormatFamily::Int && f.symmetric && !q.zeros.empty() &&
      int64_t(q.zeros.size()) != q.out_features * ng)
    bad(q.zeros.size(), " zero points, expected ", q.out_features * ng);
  if (!q.g_idx.empty() && int64_t(q.g_idx.size()) != q.in_features)
    bad(q.g_idx.size(), " g_idx entries, expected ", q.in_features);
  for (size_t c = 0; c < q.g_idx.size(); ++c)
    if (q.g_idx[c] < 0 || q.g_idx[c] >= ng) bad("g_idx[", c, "] = ", q.g_idx[c], " outside [0, ", ng, ")");
  const uint32_t limit = 1u << f.bits;
  for (size_t i = 0; i < q.codes.size(); ++i)
    if (q.codes[i] >= limit)
      bad("code ", int(q.codes[i]), " at row ", int64_t(i) / q.in_features, " column ",
          int64_t(i) % q.in_features, " does not fit in ", f.bits, " bits");
  // GGML blocks store llama.cpp's signed FP16 d (Q4_0's d = max/−8), 0 for a zero block.
  for (size_t i = 0; i < q.scales.size(); ++i)
    if (!std::isfinite(q.scales[i]) || (!ggml && !(q.scales[i] > 0.0f)))
      bad("scale ", q.scales[i], " at row ", int64_t(i) / ng, " group ", int64_t(i) % ng,
          " is not positive and finite");
  const int64_t maxq = int64_t(limit) - 1;
  for (size_t i = 0; i < q.zeros.size(); ++i) {
    const float z = q.zeros[i];
    if (ggml) {  // the block minimum m: any finite FP16 value
      if (!std::isfinite(z)) bad("block minimum ", z, " at row ", int64_t(i) / ng, " is not finite");
      continue;
    }
    if (!(z >= 0.0f && z <= float(maxq)) || z != std::floor(z))
      bad("zero point ", z, " at row ", int64_t(i) / ng, " group ", int64_t(i) % ng,
          " is not an integer in [0, ", maxq, "]");
    if (f.symmetric && z != float(int64_t(1) << (f.bits - 1)))
      bad("symmetric format with zero point ", z, " (expected ", int64_t(1) << (f.bits - 1), ")");
  }
  if (!std::isfinite(q.tensor_scale) || !(q.tensor_scale > 0.0f))
    bad("tensor_scale ", q.tensor_scale, " is not positive and finite");
}

std::vector<int32_t> int_zero_points(const QuantizedLinear& q) {
  QS_ASSERT(q.format.family == FormatFamily::Int, "zero points of a ", q.format.name(), " module");
  const size_t n = size_t(q.out_features * q.n_groups());
  std::vector<int32_t> z(n, int32_t(1) << (q.format.bits - 1));
  if (!q.zeros.empty())
    for (size_t i = 0; i < n; ++i) z[i] = int32_t(q.zeros[i]);
  return z;
}

std::vector<int32_t> g_idx_or_default(const QuantizedLinear& q) {
  if (!q.g_idx.empty()) return q.g_idx;
  const int64_t gw = q.format.group_width(q.in_features);
  std::vector<int32_t> g(size_t(q.in_features));
  for (int64_t c = 0; c < q.in_features; ++c) g[size_t(c)] = int32_t(c / gw);
  return g;
}

std::vector<int32_t> pack_words(const uint8_t* codes, int64_t count, int bits) {
  const std::vector<uint8_t> bytes = pack_codes(std::vector<uint8_t>(codes, codes + count), bits);
  std::vector<int32_t> words(size_t((count * bits + 31) / 32), 0);
  for (size_t i = 0; i < bytes.size(); ++i) {
    uint32_t w = uint32_t(words[i / 4]);
    w |= uint32_t(bytes[i]) << (8 * (i % 4));  // little-endian words of the byte stream
    words[i / 4] = int32_t(w);
  }
  return words;
}

// -------------------------------------------------------------------------- dtypes

Tensor f32_to_dtype(const float* data, const Shape& shape, DType dtype) {
  Tensor t = Tensor::zeros(dtype, shape);
  const int64_t n = t.numel();
  switch (dtype) {
    case DType::F32:
      if (n) std::memcpy(t.raw(), data, size_t(n) * 4);
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_f16(data[i]);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_bf16(data[i]);
      break;
    default:
      QS_ASSERT(false, "f32_to_dtype to ", dtype_name(dtype));
  }
  return t;
}

float round_through(float x, DType dtype) {
  switch (dtype) {
    case DType::F32: return x;
    case DType::F16: return f16_to_f32(f32_to_f16(x));
    case DType::BF16: return bf16_to_f32(f32_to_bf16(x));
    default: QS_ASSERT(false, "round_through ", dtype_name(dtype));
  }
  return x;
}

void DenseDType::see(const Tensor& t) {
  if (seen_) return;
  if (t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16) {
    dtype_ = t.dtype();
    seen_ = true;
  }
}

std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c != '\0' && std::strchr(".^$|()[]{}*+?\\", c)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

std::string qshard_producer() { return std::string("qshard ") + QSHARD_VERSION; }

}  // namespace qshard::exporting
