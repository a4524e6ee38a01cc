// Helper for check_smollm2_vs_transformers.py: runs qshard's CausalLM (CPU backend) on
// windows of a token file and writes the logits, so Python can compare them with
// transformers' LlamaForCausalLM on the same tokens.
//   causal_lm_logits MODEL_DIR TOKENS SEQLEN WINDOWS OUT_DIR
// TOKENS is int32 little-endian, used as-is; the first WINDOWS non-overlapping windows of
// SEQLEN tokens are run as one batch. OUT_DIR/logits.safetensors gets "tokens" I32
// [WINDOWS, SEQLEN] and "logits" F32 [WINDOWS, SEQLEN, vocab].
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/decoder.h"

using namespace qshard;

namespace {

std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path, ": cannot open the token file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() % sizeof(int32_t) != 0)
    fail_input(path, ": size is not a multiple of 4 (int32 little-endian tokens)");
  std::vector<int32_t> tokens(bytes.size() / sizeof(int32_t));
  std::memcpy(tokens.data(), bytes.data(), bytes.size());  // the hosts we build for are LE
  return tokens;
}

int64_t positive(const char* arg, const char* what) {
  const long long v = std::atoll(arg);
  if (v <= 0) fail_input(what, " must be a positive integer, got '", arg, "'");
  return v;
}

void write_logits(const std::string& model_dir, const std::string& tokens_path, int64_t seqlen,
                  int64_t windows, const std::string& out_dir) {
  const std::vector<int32_t> all = read_tokens(tokens_path);
  const int64_t n = windows * seqlen;
  if (int64_t(all.size()) < n)
    fail_input(tokens_path, ": ", all.size(), " tokens, fewer than ", windows, " windows of ",
               seqlen);
  const TensorStore store = TensorStore::open(model_dir);
  auto backend = make_cpu_backend();
  CausalLM lm(ModelSpec::load(model_dir), store, *backend);
  for (int64_t i = 0; i < n; ++i)
    if (all[size_t(i)] < 0 || all[size_t(i)] >= lm.spec().vocab_size)
      fail_input(tokens_path, ": token ", all[size_t(i)], " at ", i, " is outside the vocabulary");

  Tensor tokens = Tensor::zeros(DType::I32, {windows, seqlen});
  std::copy_n(all.data(), n, tokens.data<int32_t>());
  Tensor flat = Tensor::zeros(DType::I32, {n});
  std::copy_n(all.data(), n, flat.data<int32_t>());
  const Tensor hidden = lm.forward_hidden(flat, windows, seqlen);
  Tensor logits = backend->download(lm.logits(hidden));
  logits = logits.reshape({windows, seqlen, lm.spec().vocab_size});

  SafetensorsWriter w(out_dir, "logits");
  w.add("tokens", tokens);
  w.add("logits", logits);
  w.finish();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 6) {
      std::fprintf(stderr, "usage: %s MODEL_DIR TOKENS SEQLEN WINDOWS OUT_DIR\n", argv[0]);
      return 2;
    }
    write_logits(argv[1], argv[2], positive(argv[3], "SEQLEN"), positive(argv[4], "WINDOWS"),
                 argv[5]);
  } catch (const InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
