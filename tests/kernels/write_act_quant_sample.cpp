// Writes OUT/act_quant.safetensors for check_act_quant_python.py: "x" (the inputs of
// act_quant_cases.h) and "int8", "mxint8" (the CPU backend's fake-quantized outputs).
#include <cstdio>
#include <cstring>
#include <exception>

#include "act_quant_cases.h"
#include "io/safetensors.h"
#include "kernels/backend.h"

using namespace qshard;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::vector<float> xv = test::act_quant_input();
    Tensor x = Tensor::zeros(DType::F32, {test::kActRows, test::kActCols});
    std::memcpy(x.raw(), xv.data(), x.nbytes());
    auto be = make_cpu_backend();
    SafetensorsWriter w(argv[1], "act_quant");
    w.add("x", x);
    for (ActFormat f : {ActFormat::Int8, ActFormat::MXInt8}) {
      Tensor y = be->zeros(DType::F32, x.shape());
      be->fake_quant_activations(x, f, y);
      w.add(act_format_name(f), y);
    }
    w.finish();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "act_quant_sample: %s\n", e.what());
    return 1;
  }
}
