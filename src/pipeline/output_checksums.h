// Checksums of a finished output directory, recorded when it is written and checked on
// demand (`qshard verify OUT`) and before a rerun answers "nothing to do". The record
// lives twice: in OUT/.qshard/manifest.json ("files") and as OUT/SHA256SUMS, which
// `sha256sum -c SHA256SUMS` (run inside OUT) accepts. SHA-256 is io/sha256.h, qshard's own
// (already checks the resume segments; no library needed for it).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qshard {

constexpr const char* kSha256SumsFile = "SHA256SUMS";

// Hashes every regular file under out_dir (relative paths; .qshard/ and SHA256SUMS
// left out), writes SHA256SUMS atomically and returns {"NAME": {"bytes": N, "sha256": H}}.
nlohmann::json record_output_checksums(const std::string& out_dir);

// One line per problem ("NAME differs from its recorded checksum", "NAME is missing",
// "NAME is extra: not written by the run", the same for SHA256SUMS itself); empty: intact.
std::vector<std::string> verify_output(const std::string& out_dir, const nlohmann::json& files);

// "a differs, b is missing" for an error line: the first few problems and a count.
std::string summarize_problems(const std::vector<std::string>& problems);

}  // namespace qshard
