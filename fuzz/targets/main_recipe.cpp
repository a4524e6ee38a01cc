// libFuzzer entry for qshard::fuzz::recipe (fuzz/run.sh builds and runs it).
#include "fuzz/targets/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return qshard::fuzz::recipe(data, size);
}
