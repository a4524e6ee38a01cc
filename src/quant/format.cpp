#include "quant/format.h"

#include <algorithm>
#include <cctype>
#include <numeric>

#include "core/error.h"

namespace qshard {

namespace {

constexpr const char* kFormats =
    "int2..int8, mxint8, mxint6, mxint4, mxint3, mxfp4, nvfp4, q4_0, q4_1, q5_0, q5_1, q8_0, "
    "q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs";

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
  if (name == "q4_0" || name == "q4_1" || name == "q5_0" || name == "q5_1" || name == "q8_0") {
    f.family = FormatFamily::GgmlBlock;
    f.bits = name[1] - '0';
    f.symmetric = name[3] == '0';
    if (group_size == 0) group_size = 32;
    if (group_size != 32)
      fail_input("--group-size ", group_size, " is not valid for ", name,
                 ": llama.cpp's ", name, " blocks are 32 elements (use 32 or 0)");
    f.group_size = 32;
    return f;
  }
  if (name == "q2_k" || name == "q3_k" || name == "q4_k" || name == "q5_k" || name == "q6_k") {
    f.family = FormatFamily::GgmlK;
    f.bits = name[1] - '0';
    f.symmetric = f.bits == 6 || f.bits == 3;  // Q3_K and Q6_K have no minima
    const int64_t sub = f.symmetric || f.bits == 2 ? 16 : 32;
    if (group_size != 0 && group_size != sub)
      fail_input("--group-size ", group_size, " is not valid for ", name, ": its sub-blocks are ",
                 sub, " elements in super-blocks of 256 (use ", sub, " or 0)");
    f.group_size = sub;
    return f;
  }
  if (name == "iq4_nl" || name == "iq4_xs") {
    f.family = name == "iq4_nl" ? FormatFamily::GgmlIQ4NL : FormatFamily::GgmlIQ4XS;
    f.bits = 4;
    f.symmetric = true;
    if (group_size != 0 && group_size != 32)
      fail_input("--group-size ", group_size, " is not valid for ", name, ": its blocks are 32 elements (use 32 or 0)");
    f.group_size = 32;
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
    case FormatFamily::GgmlBlock: return str_cat("q", bits, symmetric ? "_0" : "_1");
    case FormatFamily::GgmlK: return str_cat("q", bits, "_k");
    case FormatFamily::GgmlIQ4NL: return "iq4_nl";
    case FormatFamily::GgmlIQ4XS: return "iq4_xs";
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

bool QuantFormat::accepts_group_size(int64_t group) const {
  switch (family) {
    case FormatFamily::Int: return group > 0;
    case FormatFamily::MXInt: return group == 16 || group == 32 || group == 128;
    case FormatFamily::MXFP4: return group == 32;
    case FormatFamily::NVFP4: return group == 16;
    case FormatFamily::GgmlBlock: return group == 32;
    case FormatFamily::GgmlK: return group == (symmetric || bits == 2 ? 16 : 32);
    case FormatFamily::GgmlIQ4NL:
    case FormatFamily::GgmlIQ4XS: return group == 32;
  }
  return false;
}

std::vector<int64_t> common_group_sizes(const QuantFormat& f, const std::vector<int64_t>& in_features,
                                        size_t max_count) {
  int64_t g = 0;
  for (const int64_t in : in_features) g = std::gcd(g, in);
  std::vector<int64_t> sizes;
  int64_t pow2 = 0;  // the largest power of two (> 1) that divides g and f takes
  for (int64_t d = g; d > 1; --d)
    if (g % d == 0 && f.accepts_group_size(d)) {
      if (sizes.size() < max_count) sizes.push_back(d);
      if (pow2 == 0 && (d & (d - 1)) == 0) pow2 = d;
    }
  // Engines' kernels favour powers of two: keep one in the list even past max_count.
  if (pow2 && std::find(sizes.begin(), sizes.end(), pow2) == sizes.end()) sizes.back() = pow2;
  return sizes;
}

namespace {

// "576, 1536" from {1536, 576, 576}.
std::string distinct_sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  std::string out;
  for (const int64_t x : v) {
    if (!out.empty()) out += ", ";  // appended: GCC 12 warns falsely on "..." + string
    out += std::to_string(x);
  }
  return out;
}

// "192, 96, 64 or 48"
std::string list_or(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += i + 1 == v.size() ? " or " : ", ";
    out += std::to_string(v[i]);
  }
  return out;
}

}  // namespace

void QuantFormat::check_divides(int64_t in_features, const std::string& tensor,
                                const std::vector<int64_t>& all_in_features) const {
  const int64_t gw = group_width(in_features);
  if (in_features <= 0)
    fail_input("tensor ", tensor, ": in_features is ", in_features, ", nothing to quantize");
  if (ggml_block() == 256 && in_features % 256 != 0)
    fail_input("tensor ", tensor, ": in_features ", in_features, " is not a multiple of 256, the "
               "super-block of ", name(), " (llama-quantize falls back to a 32-block type there: use "
               "--format gguf:NAME, which does the same, or a --recipe rule with q5_0/q8_0/iq4_nl)");
  if (gw > 0 && in_features % gw == 0) return;
  std::vector<int64_t> all = all_in_features;
  all.push_back(in_features);
  const std::string which = all_in_features.empty()
                                ? str_cat("in_features ", in_features)
                                : str_cat("the in_features of every quantized matrix (", distinct_sorted(all), ")");
  const std::vector<int64_t> sizes = common_group_sizes(*this, all);
  const std::string fix =
      !sizes.empty() ? str_cat("--group-size must divide ", which, ": ", list_or(sizes),
                               family == FormatFamily::Int ? ", or -1 for per-channel" : "")
      : family == FormatFamily::Int
          ? str_cat("no group size divides ", which, ": use --group-size -1 for per-channel")
          : str_cat("no block size of ", name(), " divides ", which,
                    ": use an int format for those matrices (a --recipe rule) or --skip them");
  fail_input("tensor ", tensor, ": in_features ", in_features, " is not a multiple of the group size ", gw,
             " of ", describe(), " (", fix, ")");
}

}  // namespace qshard
