// Defaults of the Backend interface for ops a backend may not implement yet.
#include "kernels/backend.h"

#include "core/error.h"

namespace qshard {

void Backend::fake_quant_activations(const Tensor&, ActFormat f, Tensor&) {
  fail_input("--act-format ", act_format_name(f), ": the ", name(),
             " backend does not implement activation quantization yet; run on the cpu backend");
}

}  // namespace qshard
