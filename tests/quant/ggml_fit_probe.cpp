// Writes qshard's llama.cpp fits of a weight with an importance (kquant_rtn: the imatrix
// paths of Q2_K ... Q6_K, IQ4_NL, IQ4_XS), dequantized, for check_imatrix_fits.py to
// compare with llama.cpp's own ggml_quantize_chunk.
//   ggml_fit_probe W.bin IMPORTANCE.bin ROWS COLS OUTDIR   (raw little-endian f32)
// writes OUTDIR/qs-FORMAT.bin, ROWS x COLS f32 each.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "quant/kquant.h"

using namespace qshard;

namespace {

std::vector<float> read_f32(const char* path, size_t n) {
  std::vector<float> v(n);
  FILE* f = std::fopen(path, "rb");
  if (!f || std::fread(v.data(), 4, n, f) != n) {
    std::fprintf(stderr, "ggml_fit_probe: cannot read %zu floats from %s\n", n, path);
    std::exit(2);
  }
  std::fclose(f);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: ggml_fit_probe W.bin IMPORTANCE.bin ROWS COLS OUTDIR\n");
    return 2;
  }
  const int64_t rows = std::atoll(argv[3]), cols = std::atoll(argv[4]);
  const std::vector<float> w = read_f32(argv[1], size_t(rows * cols));
  const std::vector<float> importance = read_f32(argv[2], size_t(cols));
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
  for (size_t i = 0; i < w.size(); ++i) t.data<float>()[i] = w[i];
  for (const char* name : {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"}) {
    const Tensor d = kquant_rtn(t, QuantFormat::parse(name, 0, true), name, importance).dequantize();
    const std::string path = std::string(argv[5]) + "/qs-" + name + ".bin";
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(d.data<float>(), 4, size_t(rows * cols), f) != size_t(rows * cols)) return 1;
    std::fclose(f);
  }
  return 0;
}
