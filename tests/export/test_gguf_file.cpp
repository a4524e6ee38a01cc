// GgufFile's limits: what ggml's gguf reader would refuse or misread is an InputError
// before anything is written. Tensors left in a file write the same bytes as in-memory ones.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "core/error.h"
#include "export/gguf_file.h"

using namespace qshard;
using namespace qshard::exporting;

TEST(GgufFile, TensorTooLargeForGgufIsAClearError) {
  GgufFile f;
  try {
    f.add_tensor("token_embd.weight", {int64_t(1) << 40, int64_t(1) << 30}, GgmlType::F32, {});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("too large for GGUF"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("token_embd.weight"), std::string::npos) << e.what();
  }
}

TEST(GgufFile, NameLongerThanGgmlMaxNameIsAClearError) {
  GgufFile f;
  const std::string name(64, 'x');
  EXPECT_THROW(f.add_tensor(name, {32}, GgmlType::F32, std::vector<uint8_t>(128)), InputError);
  EXPECT_NO_THROW(f.add_tensor(name.substr(0, 63), {32}, GgmlType::F32, std::vector<uint8_t>(128)));
}

TEST(GgufFile, RowBytesOfEachBlockType) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_0, 256), 8u * 18);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q5_1, 256), 8u * 24);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q8_0, 64), 2u * 34);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 512), 2u * 144);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q5_K, 256), 176u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 256), 210u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q2_K, 512), 2u * 84);  // block_q2_K
  EXPECT_EQ(ggml_row_bytes(GgmlType::IQ4_NL, 64), 2u * 18);
  EXPECT_EQ(ggml_row_bytes(GgmlType::IQ4_XS, 256), 136u);
  EXPECT_STREQ(ggml_type_name(GgmlType::IQ4_XS), "IQ4_XS");
}

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> random_bytes(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "qshard-gguf-XXXXXX").string();
    QS_ASSERT(::mkdtemp(t.data()) != nullptr, "mkdtemp");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

// The streaming export's file (tensor bytes in a spool, appended in another order with
// other bytes between them, q/k-style slice orders applied while copying) is byte for
// byte what the in-memory writer gives, by copy_file_range and by the chunked fallback.
TEST(GgufFile, TensorsInASpoolWriteTheBytesOfInMemoryOnes) {
  TempDir dir;
  std::mt19937 rng(7);
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    std::vector<int64_t> order;  // slice i of the file is stored slice order[i]
  };
  const std::vector<T> tensors = {
      {"token_embd.weight", {6, 64}, GgmlType::F16, {}},
      {"blk.0.attn_norm.weight", {7}, GgmlType::F32, {}},  // 28 bytes: padding follows
      {"blk.0.attn_q.weight", {8, 256}, GgmlType::Q4_K, {0, 4, 1, 5, 2, 6, 3, 7}},
      {"blk.0.attn_k.weight", {4, 64}, GgmlType::Q8_0, {0, 2, 1, 3}},
      {"blk.0.ffn_down.weight", {3, 512}, GgmlType::Q6_K, {}},
      {"output.weight", {5, 32}, GgmlType::IQ4_NL, {4, 3, 2, 1, 0}},
      // Over the fallback's 4 MiB buffer: copied in several chunks.
      {"blk.1.ffn_up.weight", {160, 8192}, GgmlType::F32, {}},
  };
  GgufFile mem, spooled;
  for (GgufFile* f : {&mem, &spooled}) {
    f->set_string("general.architecture", "llama");
    f->set_u32("llama.block_count", 2);
  }
  GgufSpool spool((dir.path / ".model.gguf.r0.partial").string());
  std::vector<std::vector<uint8_t>> stored(tensors.size());
  std::vector<uint64_t> offset(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i)
    stored[i] = random_bytes(rng, ggml_row_bytes(tensors[i].type, tensors[i].shape.back()) *
                                      uint64_t(tensors[i].shape.size() > 1 ? tensors[i].shape[0] : 1));
  for (size_t k = tensors.size(); k-- > 0;) {  // appended last to first, with junk between
    const std::vector<uint8_t> junk = random_bytes(rng, 1 + k * 5);
    spool.append(junk.data(), junk.size());
    offset[k] = spool.append(stored[k].data(), stored[k].size());
  }
  spool.close();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const T& t = tensors[i];
    std::vector<uint8_t> data = stored[i];
    if (!t.order.empty()) {
      const size_t slice = data.size() / size_t(t.shape[0]);
      for (size_t r = 0; r < t.order.size(); ++r)
        std::memcpy(data.data() + r * slice, stored[i].data() + size_t(t.order[r]) * slice, slice);
    }
    mem.add_tensor(t.name, t.shape, t.type, std::move(data));
    spooled.add_tensor_at(t.name, t.shape, t.type, GgufExtent{spool.path(), offset[i], t.order});
  }
  const std::string a = (dir.path / "mem.gguf").string(), b = (dir.path / "kernel.gguf").string(),
                    c = (dir.path / "chunks.gguf").string();
  mem.write(a);
  spooled.write(b);
  spooled.write(c, /*kernel_copy=*/false);
  const std::string want = read_bytes(a);
  EXPECT_GT(want.size(), 160u * 8192 * 4);
  EXPECT_TRUE(read_bytes(b) == want) << "copy_file_range";
  EXPECT_TRUE(read_bytes(c) == want) << "pread/write fallback";
  spool.remove();
  EXPECT_FALSE(std::filesystem::exists(spool.path()));
  EXPECT_FALSE(std::filesystem::exists(dir.path / ".kernel.gguf.tmp"));
}

TEST(GgufFile, ASpoolCutShortIsAClearError) {
  TempDir dir;
  GgufSpool spool((dir.path / "spool").string());
  const std::vector<uint8_t> bytes(100, 1);
  spool.append(bytes.data(), bytes.size());
  spool.close();
  GgufFile f;
  f.add_tensor_at("output_norm.weight", {32}, GgmlType::F32, GgufExtent{spool.path(), 0, {}});  // 128 bytes
  for (const bool kernel : {true, false}) {
    try {
      f.write((dir.path / "out.gguf").string(), kernel);
      FAIL() << "no error";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("ends before byte 128"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir.path / ".out.gguf.tmp")) << "temporary left behind";
    EXPECT_FALSE(std::filesystem::exists(dir.path / "out.gguf"));
  }
}
