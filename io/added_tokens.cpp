#include "io/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>
#include <limits>

#include "io/utf8.h"

namespace qshard {

namespace {

char32_t last_char(std::string_view s) {
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return utf8_next(s, b);
}

// Rust regex's \w, which `tokenizers` uses for single_word: letters, marks, decimal and
// letter numbers, connector punctuation.
bool is_word_char(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ME) ||
         cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_PC;
}

}  // namespace

AddedVocabulary::AddedVocabulary(const JsonAt& list, const Normalizer* normalizer) {
  list.array();
  for (size_t i = 0; i < list.size(); ++i) {
    const JsonAt t = list.at(i);
    const int64_t id = t["id"].integer();
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) t["id"].fail("must be in 0..2^31-1");
    tokens_.push_back(
        {t["content"].str(), static_cast<int32_t>(id), t.bool_or("single_word", false),
         t.bool_or("lstrip", false), t.bool_or("rstrip", false),
         t.bool_or("normalized", !t.bool_or("special", false)), t.bool_or("special", false)});
  }
  for (int i = 0; i < static_cast<int>(tokens_.size()); ++i) {
    const AddedToken& t = tokens_[i];
    patterns_.push_back(t.content);
    if (t.normalized && normalizer) normalizer->apply(patterns_.back());
    if (patterns_.back().empty()) continue;
    auto& table = by_byte_[t.normalized ? 1 : 0];
    if (table.empty()) table.resize(256);
    table[static_cast<unsigned char>(patterns_.back()[0])].push_back(i);
  }
  for (auto& table : by_byte_)
    for (auto& ids : table)
      std::stable_sort(ids.begin(), ids.end(),
                       [&](int a, int b) { return patterns_[a].size() > patterns_[b].size(); });
}

int32_t AddedVocabulary::id_of(std::string_view content) const {
  for (const AddedToken& t : tokens_)
    if (t.content == content) return t.id;
  return -1;
}

// Index of the longest token matching at `pos`, or -1.
int AddedVocabulary::match_at(std::string_view text, size_t pos, bool normalized) const {
  const auto& table = by_byte_[normalized ? 1 : 0];
  for (const int i : table[static_cast<unsigned char>(text[pos])])
    if (text.compare(pos, patterns_[i].size(), patterns_[i]) == 0) return i;
  return -1;
}

// AddedVocabulary::find_matches of the `tokenizers` crate.
void AddedVocabulary::split(std::string_view text, bool normalized,
                            std::vector<Segment>& out) const {
  size_t done = 0;  // end of what is already in `out`
  const auto text_until = [&](size_t end) {
    if (done < end) out.push_back({done, end, -1});
  };
  if (!by_byte_[normalized ? 1 : 0].empty()) {
    for (size_t pos = 0; pos < text.size();) {
      const int m = match_at(text, pos, normalized);
      if (m < 0) {
        ++pos;
        continue;
      }
      const AddedToken& t = tokens_[m];
      size_t start = pos, stop = pos + patterns_[m].size();
      pos = stop;
      if (t.single_word) {
        const bool space_before = start == 0 || !is_word_char(last_char(text.substr(0, start)));
        size_t k = stop;
        const bool space_after = stop == text.size() || !is_word_char(utf8_next(text, k));
        if (!space_before || !space_after) continue;
      }
      if (t.lstrip) {
        size_t s = start;
        while (s > done) {
          size_t b = s - 1;
          while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          size_t k = b;
          if (!unicode_is_whitespace(utf8_next(text, k))) break;
          s = b;
        }
        start = s;
      }
      if (t.rstrip)
        for (size_t k = stop; k < text.size();) {
          if (!unicode_is_whitespace(utf8_next(text, k))) break;
          stop = k;
        }
      text_until(start);
      out.push_back({start, stop, t.id});
      done = stop;
    }
  }
  text_until(text.size());
}

}  // namespace qshard
