// The plan of a quantize run: everything that decides its output, as one JSON object of
// "key": "value" strings, so a rerun can tell whether it is the same command (and resume
// it) or say exactly which option or input file differs (checkpoint.h).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "cli/options.h"

namespace qshard::cli {

// Options as parsed, with exact values (defaults included; --out/--overwrite/--quiet/
// --verbose left out, --calib/--recipe by content, --device as resolved),
// the model directory's files (size, plus sha256 of small files, or of a safetensors
// file's header together with its mtime), the calibration and recipe files' sha256, the
// rank count, QSHARD_CUDA_MATH if set, and the qshard version.
nlohmann::json quantize_plan(const po::variables_map& vm, const std::string& model_dir, int ranks,
                             const std::string& device);

}  // namespace qshard::cli
