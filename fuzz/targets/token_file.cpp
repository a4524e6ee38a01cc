#include <cstring>

#include "core/error.h"
#include "fuzz/targets/memfile.h"
#include "fuzz/targets/targets.h"
#include "pipeline/calibration.h"

namespace qshard::fuzz {

// The first 4 bytes pick the window options; the rest is the token file.
int token_file(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  CalibrationOptions o;
  o.n_samples = int64_t(data[0]) - 8;  // some zero or negative, to reach those checks
  o.seqlen = int64_t(data[1]) - 8;
  if (data[2] & 1) o.shuffle_seed = data[3];
  const int64_t vocab = int64_t(data[3]) << 4;
  const std::string path = as_file("fuzz.tokens", data + 4, size - 4);
  o.path = path;
  try {
    const auto stream = read_token_file(path);
    check_token_ids(stream, vocab, path);
    const CalibrationSet set = make_calibration_windows(stream, o);
    QS_ASSERT(int64_t(set.tokens.size()) == set.n_samples * set.seqlen, "window size");
  } catch (const InputError&) {
  }
  close_file(path);
  return 0;
}

}  // namespace qshard::fuzz
