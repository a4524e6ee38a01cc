#include "pipeline/output_checksums.h"

#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/file_io.h"
#include "io/sha256.h"

namespace qshard {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Relative path -> absolute, for every output file (not the bookkeeping).
std::map<std::string, fs::path> output_files(const std::string& out_dir) {
  std::map<std::string, fs::path> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(out_dir, ec), end;
  if (ec) fail_input(out_dir, ": cannot list (", ec.message(), "): check the path");
  for (; it != end; it.increment(ec)) {
    if (ec) fail_input(out_dir, ": cannot list (", ec.message(), ")");
    const std::string rel = fs::relative(it->path(), out_dir).generic_string();
    if (rel == ".qshard" || rel.starts_with(".qshard/")) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (rel == kSha256SumsFile || !it->is_regular_file()) continue;
    files[rel] = it->path();
  }
  return files;
}

std::string sums_text(const json& files) {
  std::string text;
  for (auto it = files.begin(); it != files.end(); ++it)  // sorted by name (nlohmann::json)
    text += it.value().at("sha256").get<std::string>() + "  " + it.key() + "\n";
  return text;
}

}  // namespace

json record_output_checksums(const std::string& out_dir) {
  json files = json::object();
  for (const auto& [rel, path] : output_files(out_dir))
    files[rel] = {{"bytes", int64_t(fs::file_size(path))}, {"sha256", sha256_file(path.string())}};
  write_file_atomic((fs::path(out_dir) / kSha256SumsFile).string(), sums_text(files));
  return files;
}

std::vector<std::string> verify_output(const std::string& out_dir, const json& files) {
  std::vector<std::string> problems;
  std::map<std::string, fs::path> present = output_files(out_dir);
  for (auto it = files.begin(); it != files.end(); ++it) {
    const auto p = present.find(it.key());
    if (p == present.end()) {
      problems.push_back(it.key() + " is missing");
      continue;
    }
    std::error_code ec;
    const bool same = int64_t(fs::file_size(p->second, ec)) == it.value().value("bytes", int64_t(-1)) &&
                      sha256_file(p->second.string()) == it.value().value("sha256", "");
    if (!same) problems.push_back(it.key() + " differs from its recorded checksum");
    present.erase(p);
  }
  for (const auto& [rel, _] : present) problems.push_back(rel + " is extra: not written by the run");
  const fs::path sums = fs::path(out_dir) / kSha256SumsFile;
  std::error_code ec;
  if (!fs::exists(sums, ec))
    problems.push_back(std::string(kSha256SumsFile) + " is missing");
  else if (sha256_file(sums.string()) != sha256_hex(sums_text(files)))
    problems.push_back(std::string(kSha256SumsFile) + " differs from its recorded checksum");
  return problems;
}

std::string summarize_problems(const std::vector<std::string>& problems) {
  std::string s;
  for (size_t i = 0; i < problems.size() && i < 3; ++i) s += (i ? ", " : "") + problems[i];
  if (problems.size() > 3) s += str_cat(", and ", problems.size() - 3, " more");
  return s;
}

}  // namespace qshard
