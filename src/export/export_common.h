// Pieces every exporter shares: the output-directory protocol (weights committed, then the
// source's tokenizer files copied, then config.json last, each via a temporary name),
// validation of a QuantizedLinear against its own conventions, and bit packing.
// Internal to src/export.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "export/exporter.h"
#include "io/file_io.h"
#include "io/safetensors.h"

namespace qshard::exporting {

// ---- the four writers (one .cpp each)
std::unique_ptr<Exporter> make_gptq_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                             const WriteSplit* split = nullptr);
std::unique_ptr<Exporter> make_compressed_tensors_exporter(const std::string& out_dir,
                                                           uint64_t max_shard_bytes, ActFormat act,
                                                           const WriteSplit* split = nullptr);
std::unique_ptr<Exporter> make_fakequant_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                                  ActFormat act, const WriteSplit* split = nullptr);
std::unique_ptr<Exporter> make_hdf5_exporter(const std::string& out_dir, ActFormat act,
                                             const WriteSplit* split = nullptr);
std::unique_ptr<Exporter> make_awq_exporter(const std::string& out_dir, uint64_t max_shard_bytes,
                                            const WriteSplit* split = nullptr);
std::unique_ptr<Exporter> make_gguf_exporter(const std::string& out_dir, const WriteSplit* split = nullptr);
// config.json key under which fake-quant exports record their activation quantization
// (no engine reads a fake-quant checkpoint's activation scheme; qshard eval does):
//   "qshard_activation_quant": {"format": "int8", "ignore": ["lm_head", ...]}
inline constexpr const char* kActQuantKey = "qshard_activation_quant";

// ---- output directory protocol

// write_file_atomic, fsync_dir: io/file_io.h

// The source's config.json, parsed; InputError naming the file if missing or broken.
nlohmann::json read_source_config(const std::string& source_dir);

// Finishes an export directory in the order that keeps a killed run from looking done:
//  1. checks the source (config.json readable, not the output directory itself),
//  2. removes a config.json left in out_dir by an earlier run,
//  3. commit_weights() (renames shards / model.h5 into place),
//  4. copies the source's other top-level files (tokenizer, generation config, ...),
//  5. writes extra_files (e.g. quantize_config.json),
//  6. writes config.json: the source's bytes unchanged when quantization_config is null,
//     else the source config with "quantization_config" set to it.
//     Keys of `extra_config` are added to config.json at the top level (then it is
//     rewritten even when quantization_config is null).
void finish_output(const std::string& out_dir, const ExportInfo& info,
                   const std::function<void()>& commit_weights,
                   const nlohmann::json& quantization_config,
                   const std::vector<std::pair<std::string, std::string>>& extra_files = {},
                   const nlohmann::json& extra_config = nullptr);

// ---- QuantizedLinear conventions

// Refuses (Error naming the module) a QuantizedLinear whose arrays do not agree with its
// shape and format: sizes, codes within `bits`, g_idx within [0, n_groups), positive
// finite scales, Int zero points integral in [0, 2^bits).
void validate_quantized(const std::string& module, const QuantizedLinear& q);

// Int: the zero point of every (row, group) as an integer, [out, n_groups]: the stored
// zeros, or 2^(bits-1) for a symmetric format that stores none.
std::vector<int32_t> int_zero_points(const QuantizedLinear& q);
// g_idx, or c / group_width when the QuantizedLinear leaves it empty.
std::vector<int32_t> g_idx_or_default(const QuantizedLinear& q);

// `count` codes of `bits` bits as a dense LSB-first bit stream cut into 32-bit words
// (code i at stream bits [i·bits, i·bits+bits), word w = stream bits [32w, 32w+32)):
// GPTQ's qweight/qzeros columns (formats.md B.3/B.4) and compressed-tensors' rows (D.3).
std::vector<int32_t> pack_words(const uint8_t* codes, int64_t count, int bits);

// ---- dtypes

// F32 data as a new tensor of a float dtype (F32, F16 or BF16; round-to-nearest-even).
Tensor f32_to_dtype(const float* data, const Shape& shape, DType dtype);
// A value as it reads back after a round trip through `dtype` (F32, F16, BF16).
float round_through(float x, DType dtype);

// Remembers the checkpoint's float dtype: the first float tensor passed to add_dense
// (scales and fake-quant weights are written in it), BF16 until one is seen.
class DenseDType {
 public:
  void see(const Tensor& t);
  DType get() const { return dtype_; }

 private:
  DType dtype_ = DType::BF16;
  bool seen_ = false;
};

// ---- misc

std::string regex_escape(const std::string& s);
std::string qshard_producer();  // "qshard 0.1.0"

}  // namespace qshard::exporting
