#include "pipeline/calibration.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "io/tokenizer.h"

namespace qshard {

namespace {

// Token files are the host's int32 bytes: little-endian hosts only.
static_assert(std::endian::native == std::endian::little, "token files are little-endian int32");

constexpr size_t kSniffBytes = 1024;

// Valid UTF-8 in the first KiB of `bytes`; a sequence cut off by that limit (not by the
// end of the file) counts as valid.
bool utf8_prefix_valid(const std::string& bytes) {
  const size_t n = std::min(bytes.size(), kSniffBytes);
  for (size_t i = 0; i < n;) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || (len == 2 && c < 0xC2)) return false;  // stray continuation, overlong
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= bytes.size()) return false;  // the file ends mid-character
      if (i + k >= n) return true;              // the sample ends mid-character
      if ((static_cast<unsigned char>(bytes[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

bool has_nul_prefix(const std::string& bytes) {
  return bytes.find('\0') < kSniffBytes;
}

}  // namespace

bool is_token_file(const std::string& path) {
  auto ends = [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return path.size() >= n && path.compare(path.size() - n, n, suffix) == 0;
  };
  return ends(".tokens") || ends(".bin");
}

std::vector<int32_t> read_token_file(const std::string& path) {
  const std::string bytes = read_text_file(path);
  // (Found by fuzz/: an empty file reached memcpy with a null destination.)
  if (bytes.empty()) fail_input(path, ": the token file is empty: write the tokens into it ('qshard tokenize')");
  if (!has_nul_prefix(bytes))
    fail_input(path, ": looks like text, not a token file of little-endian int32 ids: give text a name "
               "that does not end in .tokens or .bin (eval: --text), or make a token file with 'qshard tokenize'");
  if (bytes.size() % 4 != 0)
    fail_input(path, ": a token file holds little-endian int32 ids, but its size (", bytes.size(),
               " bytes) is not a multiple of 4");
  std::vector<int32_t> ids(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0) fail_input(path, ": token ", i, " is negative (", ids[i], ")");
  return ids;
}

void write_token_file(const std::string& path, const std::vector<int32_t>& ids) {
  std::string bytes(ids.size() * sizeof(int32_t), '\0');
  if (!ids.empty()) std::memcpy(bytes.data(), ids.data(), bytes.size());
  write_file_atomic(path, bytes);
}

std::string read_text_input(const std::string& path, const std::string& fix) {
  if (is_token_file(path))
    fail_input(path, ": is a token file (*.tokens / *.bin: little-endian int32 ids), not text: ", fix);
  std::string bytes = read_text_file(path);
  if (has_nul_prefix(bytes) || !utf8_prefix_valid(bytes))
    fail_input(path, ": is not UTF-8 text (a NUL byte or invalid UTF-8 in its first KiB; token ids?): ", fix);
  return bytes;
}

std::vector<int32_t> token_stream(const Tokenizer& tok, std::string_view text) {
  std::vector<int32_t> stream;
  if (tok.bos_id() >= 0) stream.push_back(tok.bos_id());
  const auto ids = tok.encode(text);
  stream.insert(stream.end(), ids.begin(), ids.end());
  return stream;
}

void check_token_ids(const std::vector<int32_t>& stream, int64_t vocab_size, const std::string& path) {
  for (size_t i = 0; i < stream.size(); ++i)
    if (stream[i] < 0 || stream[i] >= vocab_size)
      fail_input(path, ": token ", i, " is ", stream[i], ", outside the model's vocabulary of ", vocab_size,
                 " ids: the tokens were made with another tokenizer; re-tokenize with this model's");
}

CalibrationSet make_calibration_windows(const std::vector<int32_t>& stream,
                                        const CalibrationOptions& o) {
  if (o.n_samples < 1) fail_input("--n-calib must be positive");
  if (o.seqlen < 2) fail_input("--calib-seqlen must be at least 2");
  const int64_t available = int64_t(stream.size());
  if (available < o.seqlen)
    fail_input(o.path, ": ", available, " tokens, fewer than one calibration window of ", o.seqlen,
               ": use more calibration text or a smaller --calib-seqlen");
  CalibrationSet set;
  set.seqlen = o.seqlen;
  set.source_tokens = available;
  if (o.shuffle_seed) {
    // Random windows as the reference GPTQ samples them: uniform start positions.
    std::mt19937_64 rng(*o.shuffle_seed);
    std::uniform_int_distribution<int64_t> start(0, available - o.seqlen);
    set.n_samples = o.n_samples;
    for (int64_t i = 0; i < o.n_samples; ++i) {
      const int64_t s = start(rng);
      set.tokens.insert(set.tokens.end(), stream.begin() + s, stream.begin() + s + o.seqlen);
    }
    return set;
  }
  // Fewer windows than asked would quietly change the result of a long run: refuse.
  if (available / o.seqlen < o.n_samples)
    fail_input(o.path, ": ", available, " tokens, too few for --n-calib ", o.n_samples, " x --calib-seqlen ",
               o.seqlen, " (", o.n_samples * o.seqlen, " tokens): use more calibration text, a smaller "
               "--n-calib (at most ", available / o.seqlen, " here) or --calib-seqlen, or --calib-shuffle SEED "
               "(overlapping random windows)");
  set.n_samples = o.n_samples;
  set.tokens.assign(stream.begin(), stream.begin() + set.n_samples * o.seqlen);
  return set;
}

}  // namespace qshard
