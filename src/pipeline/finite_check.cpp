#include "pipeline/finite_check.h"

#include <cmath>
#include <vector>

#include "core/error.h"

namespace qshard {

void check_finite(const Tensor& t, const std::string& name) {
  if (!dtype_is_float(t.dtype())) return;
  constexpr int64_t kChunk = 1 << 16;  // converted a piece at a time: no full f32 copy
  std::vector<float> buf(size_t(std::min<int64_t>(kChunk, t.numel())));
  const auto* bytes = static_cast<const char*>(t.raw());
  const size_t elem = dtype_size(t.dtype());
  for (int64_t c = 0; c < t.numel(); c += kChunk) {
    const int64_t n = std::min(kChunk, t.numel() - c);
    convert_to_f32(t.dtype(), bytes + size_t(c) * elem, buf.data(), size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      if (std::isfinite(buf[size_t(i)])) continue;
      const int64_t at = c + i;
      const std::string where = t.ndim() == 2 ? str_cat("[", at / t.dim(1), ", ", at % t.dim(1), "]")
                                              : str_cat("[", at, "]");
      fail_input("tensor ", name, " holds ", std::isnan(buf[size_t(i)]) ? "NaN" : "Inf", " at ", where,
                 " (flat index ", at, "): the checkpoint is damaged or was saved from a diverged run; "
                 "re-download or repair it");
    }
  }
}

void check_finite_prefix(const TensorSource& source, const std::string& prefix) {
  for (const std::string& name : source.names())
    if (name.compare(0, prefix.size(), prefix) == 0) check_finite(source.get(name), name);
}

}  // namespace qshard
