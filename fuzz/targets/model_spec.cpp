#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz/targets/targets.h"
#include "model/model_spec.h"
#include "model/rope.h"

namespace qshard::fuzz {

int model_spec(const uint8_t* data, size_t size) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // ModelSpec::load turns this into an InputError naming the file
  }
  try {
    const ModelSpec spec = ModelSpec::from_json(config, "fuzz/config.json");
    (void)spec.describe();
    (void)spec.layer_prefix(spec.num_layers - 1);
    // What the forward derives from the config first: the RoPE tables.
    (void)make_rope_tables(spec, 4);
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace qshard::fuzz
