// The architectures the GGUF export writes, one row each, as llama.cpp's
// convert_hf_to_gguf.py writes them (conversion/llama.py LlamaModel, qwen.py Qwen2Model and
// Qwen3Model) and its loader reads them (src/llama-model.cpp, src/models/*.cpp): the
// architecture name that prefixes the hyperparameter keys, whether q/k rows are permuted
// into llama.cpp's rotary layout, which extra metadata and tensors the family gets, and the
// HF -> llama.cpp tensor names. export_gguf.cpp asks these and knows no family itself.
// Internal to src/export.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "export/exporter.h"
#include "export/gguf_file.h"
#include "model/model_spec.h"

namespace qshard::exporting {

struct GgufArch {
  Arch arch;
  const char* name;  // general.architecture, and the prefix of its hyperparameter keys
  // llama.cpp's rope type NORM rotates adjacent pairs, HF's rotate_half the two halves of a
  // head: LlamaModel.permute reorders q/k rows to match. NEOX families (qwen2, qwen3)
  // rotate halves as HF does, so their rows stay in HF order.
  bool permute_qk;
  // LlamaModel.set_gguf_parameters's own keys (vocab_size, rope.dimension_count) and its
  // generate_extra_tensors (rope_freqs.weight for rope_scaling llama3, which only the
  // llama graph reads).
  bool llama_extras;
  // Mixture of experts: the experts stacked into 3-D ffn_{gate,up,down}_exps, and the
  // top-k renormalization llama.cpp's graph hard-codes for the family (mixtral and
  // qwen3moe renormalize, qwen2moe does not); a config.json asking otherwise is refused.
  bool moe;
  bool norm_topk;
};

// The row for the model's family; InputError naming config.json for a family without one
// (the MoE families) or rope_scaling llama3 on a family whose llama.cpp graph ignores it.
const GgufArch& gguf_arch(const ModelSpec& spec);

// llama.cpp's name for an HF tensor name (gguf-py tensor_mapping.py), "" if unknown.
std::string gguf_tensor_name(const std::string& hf);

// An expert's Linear ("model.layers.3.mlp.experts.5.up_proj.weight"): the stacked tensor
// it is one slice of ("blk.3.ffn_up_exps.weight") and which slice.
struct ExpertSlot {
  std::string name;
  int64_t expert = 0;
};
std::optional<ExpertSlot> gguf_expert_slot(const std::string& hf);

// The experts' slices gathered into llama.cpp's [experts, out, in] tensors: every slice of
// a stack has the same shape and type (one type per GGUF tensor). The slices' bytes stay
// where the export spooled them; the stack is written from them in expert order.
class ExpertStacks {
 public:
  void add(const ExpertSlot& slot, const std::vector<int64_t>& shape, GgmlType type, GgufExtent where);
  // Adds every stack to `file`; an InputError if a stack mixes types (e.g. --recipe or
  // --target-bpw gave experts of one layer different formats).
  void write(GgufFile& file, int64_t n_experts);

 private:
  struct Stack {
    std::vector<int64_t> shape;
    GgmlType type;
    std::map<int64_t, GgufExtent> slices;
    std::string mismatch;  // the first slice whose shape or type differs
  };
  std::map<std::string, Stack> stacks_;
};

struct GgufModel {
  const GgufArch* arch = nullptr;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_experts = 0;
};

// general.* and ARCH.* keys, and the family's extra tensors (rope_freqs.weight) added to
// `file`; InputError naming config.json for a model the GGUF export cannot describe.
GgufModel gguf_model_metadata(const nlohmann::json& config, const ExportInfo& info, GgufFile& file);

}  // namespace qshard::exporting
