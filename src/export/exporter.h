// Writers of quantized checkpoints. The pipeline streams tensors in as layers finish;
// nothing in the output directory has its final name until finish() (shards renamed,
// then config.json last), so a killed run never looks finished.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/act_format.h"
#include "quant/quantized.h"

namespace qshard {
class Communicator;
struct ModelSpec;
}

namespace qshard {

enum class ExportKind {
  Gptq,               // AutoGPTQ/GPTQModel v1 layout (formats.md B), loads in vLLM/transformers
  CompressedTensors,  // pack-quantized (formats.md D), what llm-compressor writes
  FakeQuant,          // dense checkpoint of the dequantized weights, any format
  Hdf5,               // our own layout: codes, scales, zeros, g_idx per module (+ dense tensors)
  Awq,                // AutoAWQ GEMM layout (formats.md C): int4 asymmetric, loads in vLLM
  Gguf,               // one GGUF v3 file in llama.cpp's block types (formats.md E)
};

ExportKind parse_export_kind(const std::string& name);  // InputError on unknown names
const char* export_kind_name(ExportKind kind);

// What the run was, for quantization_config / quantize_config.json / HDF5 attributes.
struct ExportInfo {
  std::string source_model_dir;  // config.json and tokenizer files are copied from here
  std::string method;            // "gptq", "rtn"
  QuantFormat format;
  bool act_order = false;
  bool static_groups = false;
  double damp = 0.01;
  bool true_sequential = true;
  // Linear modules left unquantized (e.g. "lm_head"): compressed-tensors "ignore",
  // GPTQ modules_in_block_to_quantize, ...
  std::vector<std::string> ignored_modules;
  // --export gguf: unquantized 2-D tensors as "f32", "f16", "bf16" or "auto" (stored dtype).
  std::string gguf_dense = "auto";
  // --export gguf of a llama.cpp mix: dense tensors the writer quantizes itself with
  // llama.cpp's reference rounding ("model.embed_tokens.weight" -> "q6_k", "f16"), and
  // the mix's llama_ftype for general.file_type (0: from `format`).
  std::map<std::string, std::string> gguf_dense_types;
  uint32_t gguf_file_type = 0;
};

class Exporter {
 public:
  virtual ~Exporter() = default;
  // A tensor kept as stored in the source checkpoint (norms, embeddings, lm_head, biases).
  virtual void add_dense(const std::string& name, const Tensor& t) = 0;
  // module: e.g. "model.layers.0.self_attn.q_proj" (no ".weight").
  virtual void add_quantized(const std::string& module, const QuantizedLinear& q) = 0;
  virtual void finish(const ExportInfo& info) = 0;
};

// Refuses (InputError) before any work a combination the container cannot hold, e.g.
// MX formats in the GPTQ layout or asymmetric int8 where engines do not load it.
void check_export_supports(ExportKind kind, const QuantFormat& format, bool act_order);
// The same for activation quantization (--act-format): which containers can record it
// for which weight formats. scattered_g_idx: act-order without static groups.
void check_export_supports_act(ExportKind kind, ActFormat act, const QuantFormat& format,
                               bool scattered_g_idx);
// The same for the model's family (config.json): --export gguf writes the families of
// gguf_arch.cpp's table, mixture-of-experts ones with 32-block types only (no llama.cpp
// mix or K-quant fallback plan for experts yet). mix: --format gguf:MIX.
void check_export_supports_model(ExportKind kind, const ModelSpec& spec, const QuantFormat& format, bool mix);
// The --format names an MoE model's experts can take in a GGUF file (32-block types).
inline constexpr const char* kGgufExpertFormats = "q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl";
// --export gguf of an MoE model, once --recipe/--skip are known: llama.cpp stacks a layer's
// experts in one tensor of one type, so every expert Linear of a stack must get one format
// (format_for: the module's, nullopt when it stays unquantized), and that a 32-block type.
// Refused before calibration rather than when the stacks are written at the end.
void check_gguf_expert_formats(ExportKind kind, const ModelSpec& spec,
                               const std::function<std::optional<QuantFormat>(const std::string&)>& format_for);

// A checkpoint written by every rank of a job. Every rank makes the same exporter and
// the same add_dense/add_quantized/finish calls in the same order (every rank holds every
// tensor); rank owner(tensor name) writes a tensor's bytes, the others only note it.
// Safetensors: each rank writes its own shards, rank 0 numbers them (rank order),
// renames them and writes the index. HDF5: one file written collectively (MPI-IO).
// GGUF: each rank spools the tensors it owns into OUT, rank 0 writes the one file from
// every rank's spool (gguf_stream.h).
// finish() is collective; rank 0 finishes the directory (config.json last).
struct WriteSplit {
  Communicator* comm = nullptr;
  std::function<int(const std::string& tensor)> owner;
};

// `split` null (or a world of one): this process writes everything. `act` is the
// activation format the run used; the export records it where the container can
// (compressed-tensors input_activations, qshard keys for fakequant/hdf5).
std::unique_ptr<Exporter> make_exporter(ExportKind kind, const std::string& out_dir,
                                        uint64_t max_shard_bytes = 5ull << 30,
                                        const WriteSplit* split = nullptr,
                                        ActFormat act = ActFormat::None);

// Opens a model directory for evaluation: a plain checkpoint, or any of our exports,
// whose quantized modules are dequantized on read into "<module>.weight" F32 tensors,
// so the forward sees exactly the weights an engine would compute with.
std::unique_ptr<TensorSource> open_checkpoint(const std::string& dir);

// The activation quantization a model directory records: the format (None if none) and
// the modules whose inputs stay unquantized (exact names or "re:" regexes, as in
// compressed-tensors' ignore; "lm_head" unless the checkpoint quantized it).
struct ActScheme {
  ActFormat format = ActFormat::None;
  std::vector<std::string> ignore{"lm_head"};
  // Why a recorded scheme cannot be simulated (format is then None); empty when it can.
  std::string unsupported;
  ActFormat format_for(const std::string& module) const;  // None for ignored modules
};
ActScheme read_act_scheme(const std::string& dir);

}  // namespace qshard
