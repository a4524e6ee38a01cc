// The fuzzed entry points, shared by the libFuzzer binaries (fuzz/CMakeLists.txt, clang)
// and the regression replay in the normal test suite (tests/fuzz_replay). Each must
// answer any bytes with a result or a qshard::Error; anything else is a bug.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qshard::fuzz {

int safetensors_header(const uint8_t* data, size_t size);  // SafetensorsFile::open + reads
int model_spec(const uint8_t* data, size_t size);          // config.json → ModelSpec, RoPE
int token_file(const uint8_t* data, size_t size);          // token file → windows
int tokenizer_json(const uint8_t* data, size_t size);      // tokenizer.json NUL text → ids
int recipe(const uint8_t* data, size_t size);              // --recipe file → per-module formats

}  // namespace qshard::fuzz
