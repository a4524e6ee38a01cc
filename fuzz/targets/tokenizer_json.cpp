#include "io/tokenizer_json.h"

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "fuzz/targets/targets.h"

namespace qshard::fuzz {

// Bytes up to the first NUL are tokenizer.json, the rest is the text to encode (any bytes:
// invalid UTF-8 included). A tokenizer that loads must encode to ids below vocab_size().
int tokenizer_json(const uint8_t* data, size_t size) {
  const std::string all(reinterpret_cast<const char*>(data), size);
  const size_t nul = all.find('\0');
  const std::string text = nul == std::string::npos ? "" : all.substr(nul + 1);
  const auto j = nlohmann::json::parse(all.substr(0, nul), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const auto tok = make_json_tokenizer(j, nlohmann::json(), "fuzz/tokenizer.json");
    QS_ASSERT(tok->bos_id() < tok->vocab_size(), "bos ", tok->bos_id());
    for (const int32_t id : tok->encode(text))
      QS_ASSERT(id >= 0 && id < tok->vocab_size(), "id ", id);
  } catch (const InputError&) {
  }
  return 0;
}

}  // namespace qshard::fuzz
