/* llama.cpp's own quantizers with an importance matrix, through ggml's public
 * ggml_quantize_chunk (what llama-quantize --imatrix calls per tensor), for
 * check_imatrix_fits.py; built by that script against the cached llama.cpp build.
 *   ggml_quantize_chunk W.bin IMPORTANCE.bin ROWS COLS OUTDIR   -> OUTDIR/lq-FORMAT.bin (blocks) */
#include <stdio.h>
#include <stdlib.h>

#include "ggml.h"

int main(int argc, char** argv) {
  if (argc != 6) return 2;
  const long rows = atol(argv[3]), cols = atol(argv[4]);
  float* w = malloc(sizeof(float) * rows * cols);
  float* im = malloc(sizeof(float) * cols);
  FILE* f = fopen(argv[1], "rb");
  if (!f || fread(w, 4, rows * cols, f) != (size_t)(rows * cols)) return 2;
  fclose(f);
  f = fopen(argv[2], "rb");
  if (!f || fread(im, 4, cols, f) != (size_t)cols) return 2;
  fclose(f);
  const enum ggml_type types[] = {GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,  GGML_TYPE_Q5_K,
                                  GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS};
  const char* names[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"};
  for (int t = 0; t < 7; ++t) {
    const size_t row_size = ggml_row_size(types[t], cols);
    void* out = malloc(row_size * rows);
    ggml_quantize_chunk(types[t], w, out, 0, rows, cols, im);
    char path[4096];
    snprintf(path, sizeof path, "%s/lq-%s.bin", argv[5], names[t]);
    f = fopen(path, "wb");
    if (!f || fwrite(out, 1, row_size * rows, f) != row_size * rows) return 1;
    fclose(f);
    free(out);
  }
  return 0;
}
