#include "dist/partition.h"

#include <algorithm>

#include "core/error.h"

namespace qshard {

Range split_range(int64_t n, int parts, int index) {
  QS_ASSERT(n >= 0 && parts > 0 && 0 <= index && index < parts, "split_range(", n, ", ", parts,
            ", ", index, ")");
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = index * base + (index < extra ? index : extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

Range split_range_aligned(int64_t n, int parts, int index, int64_t unit) {
  QS_ASSERT(unit > 0, "split_range_aligned: unit ", unit);
  const Range units = split_range((n + unit - 1) / unit, parts, index);
  return {std::min(n, units.begin * unit), std::min(n, units.end * unit)};
}

}  // namespace qshard
