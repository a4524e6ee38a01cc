// SHA-256 against the FIPS 180-4 examples and a streamed update split at odd places.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "io/sha256.h"

namespace qshard {
namespace {

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, StreamedEqualsWhole) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += char(i * 7 + 3);
  Sha256 h;
  size_t at = 0;
  for (size_t step : {1, 63, 64, 65, 7, 200}) {
    h.update(data.data() + at, step);
    at += step;
  }
  h.update(data.data() + at, data.size() - at);
  EXPECT_EQ(h.hex_digest(), sha256_hex(data));
}

TEST(Sha256, FileAndPrefix) {
  const std::string path = testing::TempDir() + "/sha256_test.bin";
  std::ofstream(path, std::ios::binary) << "abcdef";
  EXPECT_EQ(sha256_file(path), sha256_hex("abcdef"));
  EXPECT_EQ(sha256_file(path, 3), sha256_hex("abc"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace qshard
