#include <vector>

#include "core/error.h"
#include "fuzz/targets/memfile.h"
#include "fuzz/targets/targets.h"
#include "io/safetensors.h"

namespace qshard::fuzz {

int safetensors_header(const uint8_t* data, size_t size) {
  const std::string path = as_file("fuzz.safetensors", data, size);
  try {
    const SafetensorsFile f = SafetensorsFile::open(path);
    for (const auto& name : f.names()) {
      const Tensor t = f.get(name);
      std::vector<float> out(size_t(t.numel()));
      if (!out.empty()) convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
    }
    (void)f.metadata();
  } catch (const Error&) {
  }
  close_file(path);
  return 0;
}

}  // namespace qshard::fuzz
