// qshard verify OUT: is a finished quantize output still what was written?
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "io/json_file.h"
#include "pipeline/output_checksums.h"

namespace qshard::cli {

namespace {

constexpr const char* kUsage =
    "usage: qshard verify OUT\n\n"
    "Checks every file of a finished 'qshard quantize' output against the SHA-256 recorded\n"
    "when it was written (OUT/.qshard/manifest.json) and names each file that differs, is\n"
    "missing or is extra. OUT/SHA256SUMS holds the same checksums for 'sha256sum -c'.\n"
    "Exit code 0: intact; 2: a problem (one line naming the files).";

}  // namespace

int run_verify(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string out_dir;
  desc.add_options()("out", po::value(&out_dir)->required(), "the output directory of 'qshard quantize' (or first argument)");
  po::positional_options_description pos;
  pos.add("out", 1);
  po::variables_map vm;
  if (!parse_options(args, kUsage, desc, vm, comm.is_root(), &pos)) return 0;
  if (!comm.is_root()) return 0;
  const std::string manifest = (std::filesystem::path(out_dir) / ".qshard" / "manifest.json").string();
  std::error_code ec;
  if (!std::filesystem::is_directory(out_dir, ec))
    fail_input(out_dir, ": no such directory: give the --out directory of a 'qshard quantize' run");
  if (!std::filesystem::exists(manifest, ec))
    fail_input(out_dir, ": has no .qshard/manifest.json, so no recorded checksums: it was not written by "
               "'qshard quantize' (or its .qshard was removed)");
  const nlohmann::json m = read_json_file(manifest);
  const bool complete = m.is_object() && m.contains("complete") && m["complete"] == true;
  if (!complete)
    fail_input(out_dir, ": is an unfinished run: rerun its quantize command to finish it, then verify");
  if (!m.contains("files") || !m["files"].is_object())
    fail_input(out_dir, ": was written by a qshard that recorded no output checksums: nothing to verify against");
  std::vector<std::string> problems;
  try {
    problems = verify_output(out_dir, m["files"]);
  } catch (const nlohmann::json::exception&) {
    fail_input(manifest, ": its recorded checksums are unreadable (damaged outside qshard): rerun the quantize "
               "command with --overwrite to redo it");
  }
  if (!problems.empty()) {
    for (const auto& p : problems) std::printf("%s: %s\n", out_dir.c_str(), p.c_str());
    std::fflush(stdout);
    fail_input(out_dir, ": ", summarize_problems(problems), " (against the SHA-256 recorded when it was written): "
               "rerun the quantize command with --overwrite to redo it");
  }
  std::printf("%s: %zu files match the SHA-256 recorded when they were written\n", out_dir.c_str(), m["files"].size());
  return 0;
}

}  // namespace qshard::cli
