// Calibration data: N windows of S tokens from a text (tokenized with the model's
// tokenizer) or a token file. Default: consecutive non-overlapping windows from the
// start, deterministic and comparable across tools; a seed picks random windows instead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qshard {

class Tokenizer;

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

// A token file is named *.tokens or *.bin.
bool is_token_file(const std::string& path);
// InputError naming `path` if it is not whole int32s, holds a negative id, or looks like
// text (no NUL byte in its first KiB: real ids are below 2^24, so every id has one).
std::vector<int32_t> read_token_file(const std::string& path);
// Writes `ids` as little-endian int32, atomically (temp + rename).
void write_token_file(const std::string& path, const std::vector<int32_t>& ids);

// The file's bytes, refused (InputError naming `path`, then `fix`) if it is a token file:
// by name, or by content (a NUL byte or invalid UTF-8 in its first KiB). Reading token
// ids as text "works" and gives nonsense numbers; this turns that into one clear line.
std::string read_text_input(const std::string& path, const std::string& fix);

// [BOS] (when the tokenizer has one) + encode(text): the one token stream that eval
// --text evaluates, text calibration uses and qshard tokenize writes.
std::vector<int32_t> token_stream(const Tokenizer& tok, std::string_view text);

// `stream` is the whole tokenized source ([BOS] + encode(text), or a token file).
// Fewer windows than asked for is a warning; none at all an InputError.
// InputError naming `path` and the first id outside [0, vocab_size).
void check_token_ids(const std::vector<int32_t>& stream, int64_t vocab_size, const std::string& path);

CalibrationSet make_calibration_windows(const std::vector<int32_t>& stream,
                                        const CalibrationOptions& options);

}  // namespace qshard
