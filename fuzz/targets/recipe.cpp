#include <string>

#include "core/error.h"
#include "fuzz/targets/memfile.h"
#include "fuzz/targets/targets.h"
#include "pipeline/recipe.h"
#include "quant/format.h"

namespace qshard::fuzz {

// The bytes are a --recipe file; a recipe that loads is asked for the format of a few
// module names, as check_quantize_inputs and the layer loop do.
int recipe(const uint8_t* data, size_t size) {
  const std::string path = as_file("recipe.json", data, size);
  if (path.empty()) return 0;
  try {
    Recipe r(QuantFormat::parse("int4", 0, true));
    r.load_file(path);
    for (const char* m : {"model.layers.0.self_attn.q_proj", "model.layers.31.mlp.down_proj", "lm_head"}) {
      const auto f = r.format_for(m);
      if (f) (void)f->describe();
    }
  } catch (const Error&) {
  }
  close_file(path);
  return 0;
}

}  // namespace qshard::fuzz
