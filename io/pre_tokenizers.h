// tokenizer.json "pre_tokenizer": Split (string or regex, every delimiter behavior,
// invert), ByteLevel (GPT-2 regex and byte-to-unicode map), Digits, Metaspace,
// Whitespace, WhitespaceSplit and Sequence of those, with the semantics of the
// `tokenizers` crate (pre_tokenizers/*.rs, normalizer.rs's split).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/json_at.h"

namespace qshard {

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the original text (Metaspace "first" needs it)
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may rewrite) every piece; empty pieces are dropped.
  virtual void apply(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a JSON null; InputError naming the JSON path for anything unsupported.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonAt& j);

// GPT-2's map of the 256 byte values to printable characters (UTF-8), which byte-level
// vocabularies are written in.
const std::string& byte_level_char(unsigned char b);

}  // namespace qshard
