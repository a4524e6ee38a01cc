// Helper for check_safetensors_python.py, which compares us with the reference
// safetensors package in both directions:
//   safetensors_sample DIR        writes DIR/single/model.safetensors and DIR/sharded/*
//                                 with the contents sample_tensors() defines (the Python
//                                 script computes the same values independently)
//   safetensors_sample read PATH  prints one line per tensor of a file or directory:
//                                 name dtype shape fnv1a64-of-bytes first-8-values-as-f32
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

using namespace qshard;

namespace {

// Element i of a sample tensor, mirrored by expected() in the Python script.
void fill(Tensor& t, int64_t offset) {
  const int64_t n = t.numel();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = k + offset;
    const double x = double(i) * 0.1 - 3.0;
    switch (t.dtype()) {
      case DType::F64: t.data<double>()[k] = x; break;
      case DType::F32: t.data<float>()[k] = float(x); break;
      case DType::BF16: t.data<uint16_t>()[k] = f32_to_bf16(float(x)); break;
      case DType::F16: t.data<uint16_t>()[k] = f32_to_f16(float(x)); break;
      case DType::F8_E4M3: {
        uint8_t code = uint8_t((i * 7 + 3) % 256);
        if ((code & 0x7f) == 0x7f) code = 0;  // NaN codes compare unequal: avoid them
        t.data<uint8_t>()[k] = code;
        break;
      }
      case DType::I64: t.data<int64_t>()[k] = i * 1000000007 - 5000000000000; break;
      case DType::I32: t.data<int32_t>()[k] = int32_t(i * 65537 - 1000000); break;
      case DType::I16: t.data<int16_t>()[k] = int16_t(i * 31 - 500); break;
      case DType::I8: t.data<int8_t>()[k] = int8_t(i % 256 - 128); break;
      case DType::U8: t.data<uint8_t>()[k] = uint8_t((i * 3) % 256); break;
      case DType::BOOL: t.data<uint8_t>()[k] = i % 3 == 0; break;
    }
  }
}

struct Sample {
  const char* name;
  DType dtype;
  Shape shape;
};

// Kept in step with SAMPLES in check_safetensors_python.py.
const std::vector<Sample>& sample_tensors() {
  static const std::vector<Sample> s = {
      {"w.bf16", DType::BF16, {3, 5, 7}}, {"w.f16", DType::F16, {4, 9}},
      {"w.f32", DType::F32, {2, 3, 4}},   {"w.f64", DType::F64, {7}},
      {"w.i64", DType::I64, {5, 2}},      {"w.i32", DType::I32, {3, 3}},
      {"w.i16", DType::I16, {11}},        {"w.i8", DType::I8, {2, 2, 2, 2}},
      {"w.u8", DType::U8, {13}},          {"w.bool", DType::BOOL, {6}},
      {"w.f8", DType::F8_E4M3, {16, 16}}, {"scalar.f32", DType::F32, {}},
      {"empty.f16", DType::F16, {0, 3}},  {"empty.i32", DType::I32, {4, 0}},
  };
  return s;
}

void write_set(const std::string& dir, uint64_t max_shard_bytes) {
  SafetensorsWriter w(dir, "model", max_shard_bytes);
  for (size_t k = 0; k < sample_tensors().size(); ++k) {
    const Sample& s = sample_tensors()[k];
    Tensor t = Tensor::zeros(s.dtype, s.shape);
    fill(t, int64_t(k) * 7);
    w.add(s.name, t);
  }
  w.finish();
}

uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001b3ull;
  return h;
}

void print_tensors(const std::string& path) {
  TensorStore s = TensorStore::open(path);
  for (const auto& name : s.names()) {
    Tensor t = s.get(name);
    std::string shape;
    for (int64_t d : t.shape()) {
      if (!shape.empty()) shape += ',';
      shape += std::to_string(d);
    }
    std::printf("%s %s [%s] %016" PRIx64, name.c_str(), std::string(dtype_name(t.dtype())).c_str(),
                shape.c_str(), fnv1a(t.raw(), t.nbytes()));
    const size_t n = std::min<size_t>(8, size_t(t.numel()));
    std::vector<float> v(n);
    if (n) convert_to_f32(t.dtype(), t.raw(), v.data(), n);
    for (float x : v) std::printf(" %.9g", double(x));
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "read") {
      print_tensors(argv[2]);
    } else if (argc == 2) {
      write_set(std::string(argv[1]) + "/single", 5ull << 30);
      write_set(std::string(argv[1]) + "/sharded", 256);
    } else {
      std::fprintf(stderr, "usage: %s DIR | %s read FILE_OR_DIR\n", argv[0], argv[0]);
      return 2;
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
