#include "dist/partition.h"

#include "core/error.h"

namespace qshard {

Range split_range(int64_t n, int parts, int index) {
  QS_ASSERT(n >= 0 && parts > 0 && 0 <= index && index < parts, "split_range(", n, ", ", parts,
            ", ", index, ")");
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = index * base + (index < extra ? index : extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace qshard
