// qshard eval: perplexity and KL divergence vs a reference, windows split over ranks.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/device.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/eval.h"
#include "export/exporter.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "pipeline/calibration.h"

namespace qshard::cli {

namespace {

constexpr const char* kUsage =
    "usage: qshard eval --model DIR (--text FILE | --tokens FILE) [--reference DIR]\n"
    "                   [--seqlen 256] [--max-windows N] [--act-format none|int8|mxint8] [--json]\n\n"
    "Perplexity of the model on a text and, with --reference, the KL divergence\n"
    "KL(reference || model) per predicted token over the full vocabulary and top-1 agreement.\n"
    "Protocol: tokens = [BOS] + encode(whole file) for --text; for --tokens the token file\n"
    "(little-endian int32, e.g. from 'qshard tokenize') is the whole stream as it is, no BOS\n"
    "added; non-overlapping windows of --seqlen tokens (the remainder is dropped); each\n"
    "window predicts its positions 1..seqlen-1; ppl = exp(mean NLL). Under mpirun the\n"
    "windows are split over the ranks; the result does not depend on the number of ranks.\n"
    "Activation quantization: the inputs of the model's quantized Linears are fake-quantized\n"
    "as its config records (compressed-tensors input_activations, qshard's fakequant/hdf5\n"
    "keys); --act-format overrides that (none turns it off; int8 or mxint8 on a plain model\n"
    "applies to every decoder Linear, not lm_head). The reference always runs unquantized.\n\n"
    "--json keys: ppl, nll_mean, tokens (predicted), windows, kld_mean, kld_median, kld_p99,\n"
    "kld_max, top1_agree (null without --reference), seconds, ranks.\n"
    "Threads per rank: OMP_NUM_THREADS (with several ranks on a node, cores / ranks).\n"
    "Exit status: 0 done, 2 bad input (the message names the file or option), 1 other errors.\n\n"
    "example: mpirun -n 4 qshard eval --model out/llama-w4 --reference llama --text wiki.txt --json";

// Everything needed to run one model; the store outlives the model that reads it.
struct LoadedModel {
  std::unique_ptr<TensorSource> store;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<CausalLM> lm;
};

LoadedModel load_model(const std::string& dir, const std::string& device) {
  LoadedModel m;
  ModelSpec spec = ModelSpec::load(dir);
  m.store = open_checkpoint(dir);  // plain, or any of our exports dequantized on read
  m.backend = make_backend(device);
  m.lm = std::make_unique<CausalLM>(std::move(spec), *m.store, *m.backend);
  return m;
}

// The activation scheme the checkpoint records, or --act-format over its module coverage.
ActScheme activation_scheme(const std::string& dir, const std::string& override_name) {
  ActScheme s = read_act_scheme(dir);
  if (!override_name.empty()) {
    s.format = parse_act_format(override_name);
    s.unsupported.clear();
  } else if (!s.unsupported.empty()) {
    fail_input(dir, "/config.json records activation quantization qshard cannot simulate: ",
               s.unsupported, "; pass --act-format int8, mxint8 or none");
  }
  return s;
}

// Rank 0 tokenizes (or reads the token file) and broadcasts, so every rank sees
// identical windows.
std::vector<int32_t> load_tokens(const std::string& model_dir, const std::string& text_path,
                                 const std::string& tokens_path, Communicator& comm) {
  std::vector<int32_t> tokens;
  int64_t n = 0;
  if (comm.is_root()) {
    if (!tokens_path.empty()) {
      tokens = read_token_file(tokens_path);
    } else {
      const std::string text = read_text_input(text_path, "pass it as --tokens FILE");
      if (text.empty()) fail_input(text_path, ": is empty");
      tokens = token_stream(*Tokenizer::load(model_dir), text);
    }
    n = int64_t(tokens.size());
  }
  comm.broadcast(&n, sizeof n, 0);
  tokens.resize(size_t(n));
  comm.broadcast(tokens.data(), n * int64_t(sizeof(int32_t)), 0);
  return tokens;
}

}  // namespace

int run_eval(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string model_dir, text_path, tokens_path, reference_dir, act_name, device_name = "auto";
  EvalOptions opt;
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "Hugging Face model directory to evaluate")
      ("text", po::value(&text_path), "text file, tokenized as one string with BOS first")
      ("tokens", po::value(&tokens_path), "token file (little-endian int32, 'qshard tokenize'): the "
       "whole token stream as it is, no BOS added")
      ("reference", po::value(&reference_dir), "model directory with the same vocabulary (e.g. the "
       "unquantized model) for KL divergence and top-1 agreement")
      ("seqlen", po::value(&opt.seqlen)->default_value(256), "tokens per window")
      ("max-windows", po::value(&opt.max_windows)->default_value(0), "evaluate only the first N windows (0: all)")
      ("batch-tokens", po::value(&opt.batch_tokens)->default_value(2048),
       "tokens per forward pass (windows are batched up to this many tokens)")
      ("act-format", po::value(&act_name),
       "fake-quantize the quantized Linears' inputs: none, int8 (per token), mxint8 (blocks of "
       "32); default: what the model's config.json records")
      ("json", "print one JSON object as the last line of stdout")
      ("device", po::value(&device_name)->default_value("auto"), "cpu, cuda, or auto (cuda when a GPU and the CUDA backend exist)")
      ("quiet", "no progress on stderr");
  po::variables_map vm;
  if (!parse_options(args, kUsage, desc, vm, comm.is_root())) return 0;
  if (vm.count("quiet")) log_set_level(LogLevel::Quiet);
  if (text_path.empty() == tokens_path.empty())
    fail_input("give exactly one of --text FILE and --tokens FILE (see 'qshard eval --help')");
  if (opt.seqlen < 2) fail_input("--seqlen must be at least 2");
  if (opt.max_windows < 0) fail_input("--max-windows must be 0 (all) or positive");
  if (opt.batch_tokens < 1) fail_input("--batch-tokens must be positive");

  const std::string device = resolve_device(device_name);
  LoadedModel model = load_model(model_dir, device);
  const ActScheme act = activation_scheme(model_dir, act_name);
  if (act.format != ActFormat::None)
    model.lm->set_activation_quant([act](const std::string& m) { return act.format_for(m); });
  LoadedModel reference;
  if (!reference_dir.empty()) reference = load_model(reference_dir, device);
  const std::vector<int32_t> tokens = load_tokens(model_dir, text_path, tokens_path, comm);
  const std::string& source = tokens_path.empty() ? text_path : tokens_path;
  check_token_ids(tokens, model.lm->spec().vocab_size, source);
  if (int64_t(tokens.size()) < opt.seqlen)
    fail_input(source, ": ", tokens.size(), " tokens, fewer than one window of --seqlen ",
               opt.seqlen, ": use a longer ", tokens_path.empty() ? "text" : "token file",
               " or a smaller --seqlen");
  log_info("model: ", model_dir, " (", model.lm->spec().describe(), ")");
  log_info(tokens_path.empty() ? "text: " : "tokens: ", source, ", ", tokens.size(), " tokens; ",
           comm.size(), " rank(s)");
  if (act.format != ActFormat::None)
    log_info("activations: ", act_format_name(act.format), " on the inputs of the quantized Linears");

  const EvalResult r = evaluate(*model.lm, reference.lm.get(), tokens, opt, comm);
  if (comm.is_root()) {
    std::printf("windows      %lld x %lld tokens (%lld predicted)\n", (long long)r.windows,
                (long long)opt.seqlen, (long long)r.tokens);
    if (act.format != ActFormat::None)
      std::printf("activations  %s (fake-quantized inputs of the quantized Linears)\n",
                  act_format_name(act.format));
    std::printf("perplexity   %.4f  (mean NLL %.5f)\n", r.ppl, r.nll_mean);
    if (r.has_reference) {
      std::printf("KLD vs ref   mean %.6f  median %.6f  p99 %.6f  max %.6f\n", r.kld_mean,
                  r.kld_median, r.kld_p99, r.kld_max);
      std::printf("top-1        %.4f%% agreement with the reference\n", 100.0 * r.top1_agree);
    }
    std::printf("time         %.2f s (%.0f tokens/s) on %d rank(s)\n", r.seconds,
                double(r.windows * opt.seqlen) / r.seconds, r.ranks);
    if (vm.count("json")) std::printf("%s\n", r.to_json().c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace qshard::cli
