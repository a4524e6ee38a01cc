#include "cli/quantize_plan.h"

#include <sys/stat.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/sha256.h"

namespace qshard::cli {

namespace fs = std::filesystem;

namespace {

// Options left out of the plan, and why (tests/e2e/check_resume_options.py reads the
// same list from its own table: an option in neither is a test failure).
//   out, overwrite: where and whether to write, not what;  quiet, verbose: stderr only;
//   calib, recipe: the path does not reach the output, the file's content does ("--calib
//   file", "--recipe file" below);  device: recorded as resolved ("device": auto -> cpu).
const std::set<std::string> kIgnored = {"out", "overwrite", "quiet", "verbose", "calib", "recipe", "device"};

// The shortest text that reads back as the same value (std::to_chars), so 0.1f and
// 0.10000000149 are told apart and nothing is shown rounded.
template <class F>
std::string exact_float(F x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string option_value(const std::string& name, const po::variable_value& v) {
  const boost::any& a = v.value();
  if (a.empty()) return "set";
  // A flag (--sym, --act-order) holds an empty string.
  if (const auto* s = boost::any_cast<std::string>(&a)) return s->empty() ? "set" : *s;
  if (const auto* i = boost::any_cast<int64_t>(&a)) return std::to_string(*i);
  if (const auto* i = boost::any_cast<int>(&a)) return std::to_string(*i);
  if (const auto* u = boost::any_cast<uint64_t>(&a)) return std::to_string(*u);
  if (const auto* d = boost::any_cast<double>(&a)) return exact_float(*d);
  if (const auto* f = boost::any_cast<float>(&a)) return exact_float(*f);
  if (const auto* b = boost::any_cast<bool>(&a)) return *b ? "true" : "false";
  if (const auto* vs = boost::any_cast<std::vector<std::string>>(&a)) {
    // Repeated options keep their order (--skip rules apply in order); JSON keeps any
    // spaces inside a value apart from the separators.
    return nlohmann::json(*vs).dump();
  }
  // A new option type must be added above, or a resume could not see it change.
  QS_ASSERT(false, "--", name, " has a value type the resume plan cannot record (", a.type().name(), ")");
}

std::string file_identity(const fs::path& p) {
  std::error_code ec;
  const uint64_t size = fs::file_size(p, ec);
  if (ec) fail_input(p.string(), ": cannot read (", ec.message(), "): check the path and that it is readable");
  const std::string name = p.filename().string();
  if (name.size() > 12 && name.ends_with(".safetensors")) {
    // Weights are too big to hash on every start: the header (names, shapes, offsets),
    // the size and the modification time stand in for them.
    uint64_t n = 0;
    std::ifstream f(p, std::ios::binary);
    f.read(reinterpret_cast<char*>(&n), 8);
    struct stat st {};
    ::stat(p.c_str(), &st);
    return str_cat(size, " bytes, mtime ", int64_t(st.st_mtim.tv_sec), ".", st.st_mtim.tv_nsec,
                   ", header sha256 ", sha256_file(p.string(), n < size ? 8 + n : size));
  }
  if (size > (64u << 20)) {
    struct stat st {};
    ::stat(p.c_str(), &st);
    return str_cat(size, " bytes, mtime ", int64_t(st.st_mtim.tv_sec), ".", st.st_mtim.tv_nsec);
  }
  return str_cat(size, " bytes, sha256 ", sha256_file(p.string()));
}

}  // namespace

nlohmann::json quantize_plan(const po::variables_map& vm, const std::string& model_dir, int ranks,
                             const std::string& device) {
  nlohmann::json plan = nlohmann::json::object();
  plan["qshard"] = QSHARD_VERSION;
  plan["ranks"] = std::to_string(ranks);
  plan["device"] = device;
  for (const auto& [name, value] : vm)
    if (!kIgnored.count(name)) plan["--" + name] = option_value(name, value);
  // The one environment setting that changes results: the CUDA forward's GEMM precision
  // (kernels/cuda). Recorded whenever set, whatever the device.
  if (const char* m = std::getenv("QSHARD_CUDA_MATH"); m && *m) plan["env QSHARD_CUDA_MATH"] = m;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(model_dir, ec)) {
    std::error_code ec2;
    if (fs::is_regular_file(e.path(), ec2)) plan["model file " + e.path().filename().string()] = file_identity(e.path());
  }
  for (const char* opt : {"calib", "recipe"})
    if (vm.count(opt)) plan["--" + std::string(opt) + " file"] = file_identity(vm[opt].as<std::string>());
  return plan;
}

}  // namespace qshard::cli
