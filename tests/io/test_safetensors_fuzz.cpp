// Deterministic mutation fuzzing: whatever the bytes, opening and reading every tensor
// either works or throws qshard::Error. Under the sanitizer build this also proves no
// out-of-bounds read. For open-ended fuzzing see fuzz/run.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace qshard;
using qshard::testing::read_bytes;
using qshard::testing::TempDir;
using qshard::testing::write_bytes;

namespace {

// Touches every byte of every tensor, as a consumer would.
size_t read_everything(const TensorSource& src) {
  size_t tensors = 0;
  for (const auto& name : src.names()) {
    Tensor t = src.get(name);
    std::vector<float> f(size_t(t.numel()));
    if (!f.empty()) convert_to_f32(t.dtype(), t.raw(), f.data(), f.size());
    volatile float sink = 0;
    for (float v : f) sink = sink + v;
    ++tensors;
  }
  return tensors;
}

Tensor patterned(DType d, Shape s) {
  Tensor t = Tensor::zeros(d, std::move(s));
  for (size_t i = 0; i < t.nbytes(); ++i) static_cast<uint8_t*>(t.raw())[i] = uint8_t(i * 13 + 1);
  return t;
}

std::string header_len_fixed(std::string bytes, int64_t delta) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(bytes[i]);
  n += uint64_t(delta);
  for (int i = 0; i < 8; ++i) bytes[i] = char(n >> (8 * i));
  return bytes;
}

// One mutation. Most target the header, where the parsing logic is; the JSON-aware
// ones (digits, punctuation, keeping the length prefix consistent) get past the JSON
// parser often enough to reach the field checks.
std::string mutate(std::string b, std::mt19937_64& rng, size_t header_end) {
  auto pick = [&rng](size_t n) { return n == 0 ? size_t(0) : size_t(rng() % n); };
  const size_t json_len = header_end > 8 ? header_end - 8 : 0;
  switch (rng() % 9) {
    case 0:  // any byte
      if (!b.empty()) b[pick(b.size())] = char(rng());
      break;
    case 1:  // the length prefix
      if (b.size() >= 8) {
        if (rng() % 2) b[pick(8)] = char(rng());
        else b = header_len_fixed(b, int64_t(pick(17)) - 8);
      }
      break;
    case 2:  // truncation
      b.resize(pick(b.size() + 1));
      break;
    case 3:  // a digit in the JSON: offsets and dims
      for (int tries = 0; tries < 64 && json_len; ++tries) {
        size_t i = 8 + pick(json_len);
        if (i < b.size() && b[i] >= '0' && b[i] <= '9') {
          b[i] = "0123456789"[pick(10)];
          break;
        }
      }
      break;
    case 4:  // JSON punctuation or a sign
      if (json_len && header_end <= b.size()) b[8 + pick(json_len)] = "{}[]\",:-e.9 "[pick(12)];
      break;
    case 5: {  // insert into the JSON, keeping the prefix right
      if (!json_len || header_end > b.size()) break;
      static const char* kInserts[] = {"0", "9999999999999999999", "-", ",", "[]", "{}", "\"",
                                       "1e400", "\\u0000", "18446744073709551615"};
      std::string ins = kInserts[pick(10)];
      b.insert(8 + pick(json_len), ins);
      b = header_len_fixed(b, int64_t(ins.size()));
      break;
    }
    case 6: {  // delete from the JSON, keeping the prefix right
      if (!json_len || header_end > b.size()) break;
      size_t at = 8 + pick(json_len), n = 1 + pick(std::min<size_t>(8, header_end - at));
      b.erase(at, n);
      b = header_len_fixed(b, -int64_t(n));
      break;
    }
    case 7:  // data bytes: must not matter
      if (b.size() > header_end) b[header_end + pick(b.size() - header_end)] ^= char(1 << pick(8));
      break;
    case 8:  // append garbage
      b.append(pick(16), char(rng()));
      break;
  }
  return b;
}

}  // namespace

TEST(SafetensorsFuzz, MutatedFilesNeverCrash) {
  TempDir dir;
  {
    SafetensorsWriter w(dir.str(), "model", 5ull << 30, {{"format", "pt"}, {"k", "v"}});
    w.add("a", patterned(DType::F32, {2, 3}));
    w.add("b", patterned(DType::BF16, {5}));
    w.add("s", patterned(DType::I8, {}));
    w.add("e", patterned(DType::U8, {0, 2}));
    w.add("f8", patterned(DType::F8_E4M3, {7}));
    w.add("d", patterned(DType::F64, {3}));
    w.finish();
  }
  const std::string valid = read_bytes(dir / "model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(valid[i]);
  const size_t header_end = 8 + size_t(n);

  std::mt19937_64 rng(20240607);
  const std::string path = dir / "fuzz.safetensors";
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string b = valid;
    const int rounds = 1 + int(rng() % 3);
    for (int r = 0; r < rounds; ++r) b = mutate(std::move(b), rng, header_end);
    write_bytes(path, b);
    try {
      TensorStore s = TensorStore::open_file(path);
      read_everything(s);
      ++opened;
    } catch (const Error& e) {
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++rejected;
    }
  }
  // Both outcomes must be common, or the mutations are not exercising the checks.
  EXPECT_GT(opened, 100);
  EXPECT_GT(rejected, 1000);
  std::cout << "opened " << opened << ", rejected " << rejected << "\n";
}

TEST(SafetensorsFuzz, MutatedIndexNeverCrashes) {
  TempDir dir;
  {
    SafetensorsWriter w(dir.str(), "model", 24);
    w.add("a", patterned(DType::F32, {4}));
    w.add("b", patterned(DType::F32, {4}));
    w.add("c", patterned(DType::I16, {3}));
    w.finish();
  }
  const std::string index_path = dir / "model.safetensors.index.json";
  const std::string valid = read_bytes(index_path);
  std::mt19937_64 rng(7);
  int opened = 0;
  for (int iter = 0; iter < 1000; ++iter) {
    std::string b = valid;
    for (int r = 0, rounds = 1 + int(rng() % 2); r < rounds; ++r) {
      const size_t at = rng() % b.size();
      switch (rng() % 3) {
        case 0: b[at] = "{}[]\",:./-0123 "[rng() % 15]; break;
        case 1: b.erase(at, 1 + rng() % 4); break;
        case 2: b.insert(at, rng() % 2 ? "../" : "\""); break;
      }
      if (b.empty()) b.assign(1, 'x');
    }
    write_bytes(index_path, b);
    try {
      read_everything(TensorStore::open(dir.str()));
      ++opened;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(opened, 10);
}
