// tokenizer.json "added_tokens", matched in the text before the model sees it, as the
// `tokenizers` crate's AddedVocabulary does: leftmost match, longest at that position;
// tokens with normalized=false are matched in the raw text, the others (their content
// normalized too) in the normalized text; lstrip/rstrip take the whitespace beside a match
// into it, single_word matches only between non-word characters.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/json_at.h"
#include "io/normalizers.h"

namespace qshard {

struct AddedToken {
  std::string content;
  int32_t id;
  bool single_word, lstrip, rstrip, normalized, special;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // The "added_tokens" array; `normalizer` (may be null) applies to normalized tokens.
  AddedVocabulary(const JsonAt& list, const Normalizer* normalizer);

  struct Segment {
    size_t begin, end;  // byte range in the text
    int32_t id;         // the added token there, or -1 for text to tokenize
  };
  // Splits `text` by the tokens with normalized == `normalized` (empty segments dropped).
  void split(std::string_view text, bool normalized, std::vector<Segment>& out) const;

  bool has_normalized() const { return !by_byte_[1].empty(); }
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  int32_t id_of(std::string_view content) const;  // -1 if none

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::string> patterns_;  // what is matched: content, normalized if the token is
  // [normalized][first byte]: indices into tokens_, longest content first.
  std::vector<std::vector<int>> by_byte_[2];
  int match_at(std::string_view text, size_t pos, bool normalized) const;
};

}  // namespace qshard
