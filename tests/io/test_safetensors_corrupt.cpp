// Every way a header can lie must end in an InputError that names the file.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/safetensors.h"
#include "io_test_util.h"

using namespace qshard;
using qshard::testing::expect_input_error;
using qshard::testing::safetensors_bytes;
using qshard::testing::TempDir;
using qshard::testing::write_bytes;

namespace {

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  // Writes the bytes as bad.safetensors and requires open() to reject them.
  void expect_rejected(const std::string& bytes, const std::vector<std::string>& needles = {}) {
    const std::string path = dir_ / "bad.safetensors";
    write_bytes(path, bytes);
    std::vector<std::string> all = needles;
    all.push_back(path);
    expect_input_error([&] { SafetensorsFile::open(path); }, all);
  }
  std::string valid() {  // two F32 tensors, 8 bytes each
    return safetensors_bytes(
        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
        std::string(16, '\x01'));
  }
  std::string one(const std::string& entry, size_t data_bytes) {
    return safetensors_bytes(R"({"t":)" + entry + "}", std::string(data_bytes, '\0'));
  }
  TempDir dir_;
};

}  // namespace

TEST_F(SafetensorsCorrupt, ValidBaselineOpens) {
  write_bytes(dir_ / "ok.safetensors", valid());
  EXPECT_EQ(SafetensorsFile::open(dir_ / "ok.safetensors").names(),
            (std::vector<std::string>{"a", "b"}));
}

TEST_F(SafetensorsCorrupt, MissingFile) {
  expect_input_error([&] { SafetensorsFile::open(dir_ / "nope.safetensors"); },
                     {dir_ / "nope.safetensors"});
}

TEST_F(SafetensorsCorrupt, Directory) {
  expect_input_error([&] { SafetensorsFile::open(dir_.str()); }, {dir_.str(), "not a regular file"});
}

TEST_F(SafetensorsCorrupt, TruncatedFile) {
  const std::string v = valid();
  expect_rejected(v.substr(0, v.size() - 3), {"truncated"});
}

TEST_F(SafetensorsCorrupt, ShorterThanEightBytes) {
  expect_rejected("", {"0 bytes"});
  expect_rejected(std::string("\x05\0\0", 3), {"3 bytes"});
}

TEST_F(SafetensorsCorrupt, HeaderLengthPastEnd) {
  expect_rejected(qshard::testing::le64(1000) + "{}", {"1000-byte header"});
}

TEST_F(SafetensorsCorrupt, HeaderLengthAbsurd) {
  expect_rejected(qshard::testing::le64(~0ull) + "{}", {"over 100 MB"});
}

TEST_F(SafetensorsCorrupt, BadJson) {
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":)"), {"not valid JSON"});
  expect_rejected(safetensors_bytes("{\"a\xff\":1}"), {"not valid JSON"});  // not UTF-8
}

TEST_F(SafetensorsCorrupt, HeaderNotAnObject) {
  expect_rejected(safetensors_bytes("[1, 2]"), {"not an object"});
  expect_rejected(safetensors_bytes(R"({"t": 3})"), {"'t'", "not an object"});
}

TEST_F(SafetensorsCorrupt, BadMetadata) {
  expect_rejected(safetensors_bytes(R"({"__metadata__": [1]})"), {"__metadata__"});
  expect_rejected(safetensors_bytes(R"({"__metadata__": {"k": 1}})"), {"'k'", "not a string"});
}

TEST_F(SafetensorsCorrupt, UnknownDType) {
  expect_rejected(one(R"({"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]})", 2),
                  {"'t'", "F8_E5M2", "BF16"});
}

TEST_F(SafetensorsCorrupt, MissingOrMistypedFields) {
  expect_rejected(one(R"({"shape":[1],"data_offsets":[0,4]})", 4), {"'t'", "dtype"});
  expect_rejected(one(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", 4), {"dtype"});
  expect_rejected(one(R"({"dtype":"F32","data_offsets":[0,4]})", 4), {"'t'", "shape"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1]})", 4), {"'t'", "data_offsets"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", 4), {"data_offsets"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", 4), {"data_offsets"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", 4), {"data_offsets"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", 4), {"shape"});
}

TEST_F(SafetensorsCorrupt, ShapeAndOffsetsDisagree) {
  expect_rejected(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8),
                  {"'t'", "12 bytes", "span 8"});
}

TEST_F(SafetensorsCorrupt, BeginAfterEnd) {
  expect_rejected(one(R"({"dtype":"U8","shape":[0],"data_offsets":[4,0]})", 4), {"begin after end"});
}

TEST_F(SafetensorsCorrupt, OverlappingOffsets) {
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                    std::string(12, '\0')),
                  {"'a'", "'b'", "overlap"});
}

TEST_F(SafetensorsCorrupt, GapInOffsets) {
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                    std::string(12, '\0')),
                  {"gap before 'b'"});
  expect_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})", 8), {"gap"});
  // Trailing bytes nobody owns.
  expect_rejected(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})", 8), {"cover 4"});
}

TEST_F(SafetensorsCorrupt, EndPastData) {
  expect_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 4),
                  {"'t'", "past the end"});
}

TEST_F(SafetensorsCorrupt, NegativeShape) {
  expect_rejected(one(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,0]})", 0),
                  {"'t'", "non-negative"});
}

TEST_F(SafetensorsCorrupt, HugeShapeOverflows) {
  expect_rejected(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})", 0),
                  {"overflows"});
  expect_rejected(one(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,0]})", 0),
                  {"non-negative integers"});
  expect_rejected(one(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})", 0),
                  {"byte size overflows"});
  // A zero dimension does not excuse the others.
  expect_rejected(one(R"({"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})", 0),
                  {"overflows"});
  expect_rejected(one(R"({"dtype":"U8","shape":[1e30],"data_offsets":[0,0]})", 0), {"shape"});
}
