#include "quant/format.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace qshard {

namespace {

constexpr const char* kFormats = "int2..int8, mxint8, mxint6, mxint4, mxint3, mxfp4, nvfp4";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

}  // namespace

QuantFormat QuantFormat::parse(const std::string& name_in, int64_t group_size, bool symmetric) {
  const std::string name = lower(name_in);
  QuantFormat f;
  if (name.size() == 4 && name.compare(0, 3, "int") == 0 && name[3] >= '2' && name[3] <= '8') {
    f.family = FormatFamily::Int;
    f.bits = name[3] - '0';
    f.symmetric = symmetric;
    if (group_size == 0) {
      f.group_size = 128;
    } else if (group_size == -1 || group_size > 0) {
      f.group_size = group_size;
    } else {
      fail_input("--group-size ", group_size, " is not valid for ", name,
                 ": use a positive number of columns that divides in_features (32, 64, 128, "
                 "256, ...), -1 for one group per output channel, or 0 for the default 128");
    }
    return f;
  }
  if (name == "mxint8" || name == "mxint6" || name == "mxint4" || name == "mxint3") {
    f.family = FormatFamily::MXInt;
    f.bits = name[5] - '0';
    f.symmetric = true;
    if (group_size == 0) group_size = 32;
    if (group_size != 16 && group_size != 32 && group_size != 128)
      fail_input("--group-size ", group_size, " is not valid for ", name,
                 ": MX block sizes are 16, 32 (default) or 128");
    f.group_size = group_size;
    return f;
  }
  if (name == "mxfp4") {
    f.family = FormatFamily::MXFP4;
    f.bits = 4;
    f.symmetric = true;
    if (group_size == 0) group_size = 32;
    if (group_size != 32)
      fail_input("--group-size ", group_size,
                 " is not valid for mxfp4: OCP MXFP4 blocks are 32 elements (use 32 or 0)");
    f.group_size = 32;
    return f;
  }
  if (name == "nvfp4") {
    f.family = FormatFamily::NVFP4;
    f.bits = 4;
    f.symmetric = true;
    if (group_size == 0) group_size = 16;
    if (group_size != 16)
      fail_input("--group-size ", group_size,
                 " is not valid for nvfp4: NVFP4 blocks are 16 elements (use 16 or 0)");
    f.group_size = 16;
    return f;
  }
  fail_input("--format '", name_in, "' is not supported: use one of ", kFormats);
}

std::string QuantFormat::name() const {
  switch (family) {
    case FormatFamily::Int: return str_cat("int", bits);
    case FormatFamily::MXInt: return str_cat("mxint", bits);
    case FormatFamily::MXFP4: return "mxfp4";
    case FormatFamily::NVFP4: return "nvfp4";
  }
  return "?";
}

std::string QuantFormat::describe() const {
  if (family == FormatFamily::Int) {
    const std::string g = group_size == -1 ? std::string("per-channel") : str_cat("g", group_size);
    return str_cat(name(), " ", g, symmetric ? " sym" : " asym");
  }
  return str_cat(name(), " b", group_size);
}

int64_t QuantFormat::group_width(int64_t in_features) const {
  return group_size == -1 ? in_features : group_size;
}

int64_t QuantFormat::n_groups(int64_t in_features) const {
  const int64_t gw = group_width(in_features);
  QS_ASSERT(gw > 0 && in_features % gw == 0, "in_features ", in_features, " group ", gw);
  return in_features / gw;
}

void QuantFormat::check_divides(int64_t in_features, const std::string& tensor) const {
  const int64_t gw = group_width(in_features);
  if (in_features <= 0)
    fail_input("tensor ", tensor, ": in_features is ", in_features, ", nothing to quantize");
  if (gw <= 0 || in_features % gw != 0)
    fail_input("tensor ", tensor, ": in_features ", in_features,
               " is not a multiple of the group size ", gw, " of ", describe(),
               " (--group-size: pick a divisor of ", in_features,
               family == FormatFamily::Int ? ", or -1 for per-channel)" : ")");
}

}  // namespace qshard
