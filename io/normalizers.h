// tokenizer.json "normalizer": NFC/NFD/NFKC/NFKD (utf8proc), Lowercase, Strip, Prepend,
// Replace (string or regex pattern) and Sequence of those.
#pragma once

#include <memory>
#include <string>

#include "io/json_at.h"

namespace qshard {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;  // valid UTF-8 in and out
};

// nullptr for a JSON null; InputError naming the JSON path for anything unsupported.
std::unique_ptr<Normalizer> make_normalizer(const JsonAt& j);

}  // namespace qshard
