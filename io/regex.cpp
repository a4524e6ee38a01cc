#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "io/utf8.h"

namespace qshard {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: matching allocates nothing per call. The JIT stack grows to 1 MiB
// because patterns like \s+(?!\S) backtrack deeply on long runs of spaces.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  MatchState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

// Oniguruma's \w (what `tokenizers` compiles the patterns with) is Letter, Mark,
// Decimal_Number and Connector_Punctuation; PCRE2 10.42's is Letter, Number and '_'.
// Spell it out, outside and inside character classes (a \W inside a class stays).
std::string onig_word_class(const std::string& pattern) {
  static const std::string word = R"(\p{L}\p{M}\p{Nd}\p{Pc})";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 'w')
        out += in_class ? word : "[" + word + "]";
      else if (e == 'W' && !in_class)
        out += "[^" + word + "]";
      else
        (out += c) += e;
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // literal ]
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);  // [:alpha:] inside a class
      if (end != std::string::npos) {
        out.append(pattern, i + 1, end + 1 - i);
        i = end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  std::string where;
  ~Impl() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& where) : impl_(new Impl) {
  impl_->where = where;
  int err = 0;
  PCRE2_SIZE offset = 0;
  const std::string compiled = onig_word_class(pattern);
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (!impl_->code) {  // report the offset in the pattern as written
    pcre2_code_free(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr));
    fail_input(where, " regex \"", pattern, "\" does not compile at offset ", offset, ": ",
               pcre2_message(err));
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // the interpreter if no JIT
}

Regex::~Regex() = default;

void Regex::find_all(std::string_view text,
                     const std::function<void(size_t, size_t)>& on_match) const {
  thread_local MatchState st;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0, last_end = std::string_view::npos;
  while (pos <= text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, st.data,
                               st.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) fail_input(impl_->where, " regex failed on the input: ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t s = ov[0], e = ov[1];
    if (s == e && e == last_end) {  // step over one character, as Oniguruma does
      if (e >= text.size()) return;
      pos = e + utf8_char_len(static_cast<unsigned char>(text[e]));
      continue;
    }
    on_match(s, e);
    last_end = e;
    pos = e;
  }
}

}  // namespace qshard
