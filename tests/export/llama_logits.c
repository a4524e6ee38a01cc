/* Runs a GGUF through llama.cpp's own library (libllama, linked against the cached build of
 * launch/build_llama_cpp.sh) and writes the logits, so that check_gguf_families.py can hold
 * qshard's GGUF export against transformers' golden logits with a reader we did not write.
 *
 *   llama_logits MODEL.gguf TOKENS.i32 B S OUT.f32
 *
 * TOKENS holds B rows of S int32 tokens; each row is decoded alone at positions 0..S-1 (a
 * cleared cache), as the golden files' rows were computed. OUT gets F32 [B, S, n_vocab].
 * K/V are cached in F32 and flash attention is off, so nothing but the weights' types
 * rounds. Exit 0, or 1 with a message on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char* text, void* user) {
  (void)user;
  if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s MODEL.gguf TOKENS.i32 B S OUT.f32\n", argv[0]);
    return 1;
  }
  const int B = atoi(argv[3]), S = atoi(argv[4]);
  llama_log_set(quiet, NULL);
  llama_backend_init();
  struct llama_model* model = llama_model_load_from_file(argv[1], llama_model_default_params());
  if (!model) {
    fprintf(stderr, "llama.cpp cannot load %s\n", argv[1]);
    return 1;
  }
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t)S;
  cp.n_threads = cp.n_threads_batch = 1;
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  struct llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) {
    fprintf(stderr, "llama.cpp cannot make a context for %s\n", argv[1]);
    return 1;
  }
  const int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
  int32_t* tokens = malloc(sizeof(int32_t) * (size_t)B * (size_t)S);
  FILE* f = fopen(argv[2], "rb");
  if (!f || fread(tokens, sizeof(int32_t), (size_t)B * S, f) != (size_t)B * S) {
    fprintf(stderr, "cannot read %d x %d tokens from %s\n", B, S, argv[2]);
    return 1;
  }
  fclose(f);
  FILE* out = fopen(argv[5], "wb");
  if (!out) {
    fprintf(stderr, "cannot write %s\n", argv[5]);
    return 1;
  }
  struct llama_batch batch = llama_batch_init(S, 0, 1);
  for (int b = 0; b < B; ++b) {
    llama_memory_clear(llama_get_memory(ctx), true);
    batch.n_tokens = S;
    for (int i = 0; i < S; ++i) {
      batch.token[i] = tokens[b * S + i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    if (llama_decode(ctx, batch) != 0) {
      fprintf(stderr, "llama_decode failed on row %d\n", b);
      return 1;
    }
    for (int i = 0; i < S; ++i) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)V, out);
  }
  fclose(out);
  llama_batch_free(batch);
  free(tokens);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  printf("%d %d %d\n", B, S, V);
  return 0;
}
