// Tokenizes a text file with Tokenizer::load(MODEL_DIR), one encode() per line (the
// newline kept), for check_tokenizer_python.py: prints the ids of each line on a line of
// its own and, on stderr, the single-thread speed.
//   tokenize_sample MODEL_DIR TEXT_FILE [REPEATS]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/json_file.h"
#include "io/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: tokenize_sample MODEL_DIR TEXT_FILE [REPEATS]\n");
    return 2;
  }
  try {
    const auto tok = qshard::Tokenizer::load(argv[1]);
    const std::string text = qshard::read_text_file(argv[2]);
    const int repeats = argc > 3 ? std::stoi(argv[3]) : 1;
    std::vector<std::string> lines;
    for (size_t pos = 0; pos < text.size();) {
      const size_t nl = text.find('\n', pos);
      const size_t end = nl == std::string::npos ? text.size() : nl + 1;
      lines.push_back(text.substr(pos, end - pos));
      pos = end;
    }
    std::vector<std::vector<int32_t>> ids(lines.size());
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < repeats; ++r)
      for (size_t i = 0; i < lines.size(); ++i) ids[i] = tok->encode(lines[i]);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t n = 0;
    for (const auto& line : ids) {
      n += line.size();
      std::string out;
      for (size_t k = 0; k < line.size(); ++k) {
        if (k) out += ' ';
        out += std::to_string(line[k]);
      }
      std::printf("%s\n", out.c_str());
    }
    std::fprintf(stderr, "%s, bos %d: %zu tokens, %.0f tokens/s (%d passes, %.3f s)\n",
                 tok->describe().c_str(), tok->bos_id(), n, double(n) * repeats / s, repeats, s);
  } catch (const qshard::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
