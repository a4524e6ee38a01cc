// qshard tokenize: a text file to the token file that eval --tokens and quantize --calib read.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/log.h"
#include "io/tokenizer.h"
#include "pipeline/calibration.h"

namespace qshard::cli {

namespace {

constexpr const char* kUsage =
    "usage: qshard tokenize --model DIR --text FILE --out FILE.tokens [--json]\n\n"
    "Tokenizes a text file with the model's tokenizer and writes the token file that\n"
    "'qshard eval --tokens' and 'qshard quantize --calib' read: [BOS] + encode(whole file as\n"
    "one string), BOS only when the tokenizer has one, as little-endian int32. This is the\n"
    "same stream 'eval --text' evaluates and text calibration uses, so a long text is\n"
    "tokenized once and reused. --out must end in .tokens or .bin (how --calib tells a\n"
    "token file from text); it appears only when complete (written beside, then renamed).\n\n"
    "--json keys: tokens, seconds (tokenizing only, loading excluded), tokens_per_s, bos (id\n"
    "or null), tokenizer.\n"
    "Exit status: 0 done, 2 bad input (the message names the file or option), 1 other errors.\n\n"
    "example: qshard tokenize --model llama --text wiki.txt --out wiki.tokens";

// The output must not replace the text it is made from.
void check_out_path(const std::string& out, const std::string& text_path) {
  if (!is_token_file(out))
    fail_input("--out ", out, ": name the token file *.tokens or *.bin (quantize --calib reads other "
               "names as text)");
  std::error_code ec;
  if (std::filesystem::exists(out, ec) && std::filesystem::equivalent(out, text_path, ec))
    fail_input("--out ", out, " is the --text file: choose another name");
}

}  // namespace

int run_tokenize(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string model_dir, text_path, out_path;
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "Hugging Face model directory (its tokenizer is used)")
      ("text", po::value(&text_path)->required(), "text file, tokenized as one string")
      ("out", po::value(&out_path)->required(), "token file to write (*.tokens or *.bin)")
      ("json", "print one JSON object as the last line of stdout")
      ("quiet", "no progress on stderr");
  po::variables_map vm;
  if (!parse_options(args, kUsage, desc, vm, comm.is_root())) return 0;
  if (vm.count("quiet")) log_set_level(LogLevel::Quiet);
  if (!comm.is_root()) return 0;  // one writer; the work is not split
  check_out_path(out_path, text_path);
  const std::string text = read_text_input(text_path, "it already holds tokens; pass it to eval --tokens or quantize --calib");
  if (text.empty()) fail_input(text_path, ": is empty: nothing to tokenize");
  const auto tok = Tokenizer::load(model_dir);
  log_info("tokenizer: ", tok->describe());

  const double t0 = wall_seconds();
  const std::vector<int32_t> tokens = token_stream(*tok, text);
  const double seconds = wall_seconds() - t0;
  write_token_file(out_path, tokens);

  const double per_s = seconds > 0 ? double(tokens.size()) / seconds : 0.0;
  std::printf("wrote %s: %zu tokens in %.3f s (%.0f tokens/s); %s\n", out_path.c_str(), tokens.size(), seconds,
              per_s, tok->describe().c_str());
  if (vm.count("json")) {
    const nlohmann::json j = {{"tokens", tokens.size()},
                              {"seconds", seconds},
                              {"tokens_per_s", per_s},
                              {"bos", tok->bos_id() >= 0 ? nlohmann::json(tok->bos_id()) : nlohmann::json()},
                              {"tokenizer", tok->describe()}};
    std::printf("%s\n", j.dump().c_str());
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace qshard::cli
