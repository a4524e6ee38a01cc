// PCRE2 (UTF + UCP, JIT-compiled when the platform has a JIT) for the regular expressions
// of tokenizer.json. The `tokenizers` crate uses Oniguruma; the patterns models ship
// (GPT-2, Llama 3, Qwen2 ...) use syntax both engines read the same way, except \w, which
// is rewritten to Oniguruma's meaning (letters, marks, decimal digits, connectors).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace qshard {

class Regex {
 public:
  // Throws InputError "`where` regex ... does not compile" (where = file and JSON path).
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(start, end) for each match in `text` (valid UTF-8), left to right, as
  // Oniguruma's find_iter does: an empty match right where the previous one ended is skipped.
  void find_all(std::string_view text, const std::function<void(size_t, size_t)>& on_match) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qshard
