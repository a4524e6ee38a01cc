// libFuzzer entry point for the safetensors reader (Clang builds only; not run by ctest).
//   ./fuzz_safetensors -max_total_time=600 -dict=... corpus_dir/
// Seed the corpus with a few real .safetensors files. Any crash or sanitizer report is
// a bug: the reader must answer every input with a result or a qshard::Error.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A memfd gives the reader a real file to mmap without touching the disk.
  static const int fd = ::memfd_create("fuzz.safetensors", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0 || ::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != ssize_t(size)) return 0;
  try {
    qshard::SafetensorsFile f = qshard::SafetensorsFile::open(path);
    for (const auto& name : f.names()) {
      qshard::Tensor t = f.get(name);
      std::vector<float> out(size_t(t.numel()));
      if (!out.empty()) qshard::convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
    }
  } catch (const qshard::Error&) {
  }
  return 0;
}
