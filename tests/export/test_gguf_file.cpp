// GgufFile's limits: what ggml's gguf reader would refuse or misread is an InputError
// before anything is written.
#include <gtest/gtest.h>

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
