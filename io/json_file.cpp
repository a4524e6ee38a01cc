#include "io/json_file.h"

#include "core/error.h"

namespace qshard {

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number
                                                  // too large for a double (1e400)
    fail_input(path, ": not valid JSON (", e.what(), "): fix or re-download the file");
  }
}

}  // namespace qshard
