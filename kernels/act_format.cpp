#include "kernels/act_format.h"

#include "core/error.h"

namespace qshard {

ActFormat parse_act_format(const std::string& name) {
  if (name == "none") return ActFormat::None;
  if (name == "int8") return ActFormat::Int8;
  if (name == "mxint8") return ActFormat::MXInt8;
  fail_input("--act-format '", name, "' is not supported: use none, int8 (per-token dynamic "
             "symmetric, as vLLM's W8A8) or mxint8 (E8M0 shared exponent per 32 inputs)");
}

const char* act_format_name(ActFormat f) {
  switch (f) {
    case ActFormat::None: return "none";
    case ActFormat::Int8: return "int8";
    case ActFormat::MXInt8: return "mxint8";
  }
  return "?";
}

}  // namespace qshard
