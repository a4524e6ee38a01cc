// Calibration data: N windows of S tokens from a text (tokenized with the model's
// tokenizer) or a token file. Default: consecutive non-overlapping windows from the
// start, deterministic and comparable across tools; a seed picks random windows instead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qshard {

struct CalibrationOptions {
  std::string path;  // text, or token file (*.tokens / *.bin: little-endian int32)
  int64_t n_samples = 128;
  int64_t seqlen = 2048;
  std::optional<uint64_t> shuffle_seed;
};

struct CalibrationSet {
  std::vector<int32_t> tokens;  // n_samples * seqlen, window after window
  int64_t n_samples = 0;
  int64_t seqlen = 0;
  int64_t source_tokens = 0;  // tokens in the whole source
};

bool is_token_file(const std::string& path);
std::vector<int32_t> read_token_file(const std::string& path);

// `stream` is the whole tokenized source ([BOS] + encode(text), or a token file).
// Fewer windows than asked for is a warning; none at all an InputError.
// InputError naming `path` and the first id outside [0, vocab_size).
void check_token_ids(const std::vector<int32_t>& stream, int64_t vocab_size, const std::string& path);

CalibrationSet make_calibration_windows(const std::vector<int32_t>& stream,
                                        const CalibrationOptions& options);

}  // namespace qshard
