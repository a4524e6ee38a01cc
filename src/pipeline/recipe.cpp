#include "pipeline/recipe.h"

#include <cctype>

#include "core/error.h"
#include "io/json_file.h"

namespace qshard {

namespace {
// libstdc++'s regex compiler reads a back-reference's or a {m,n} count's number into a
// long without an overflow check (UB, found by the recipe fuzzer): refuse long numbers
// before compiling. Module patterns need none longer than a layer index.
void check_numbers(const std::string& pattern, const std::string& where) {
  size_t run = 0;
  for (char c : pattern) {
    run = std::isdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    if (run > 9)
      fail_input(where, ": regular expression '", pattern,
                 "' has a number of more than 9 digits (a back-reference or a repeat count); "
                 "module patterns need none");
  }
}

std::regex compile(const std::string& pattern, const std::string& where) {
  check_numbers(pattern, where);
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail_input(where, ": invalid regular expression '", pattern, "' (", e.what(), ")");
  }
}

// A module name as a regex that matches only itself.
std::string escape_regex(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

void Recipe::add_skip(const std::string& pattern) {
  rules_.push_back({pattern, compile(pattern, "--skip"), true, std::nullopt});
}

void Recipe::prepend_exact(const std::string& module, const std::optional<QuantFormat>& format) {
  std::string pattern = "^";
  for (const char c : module) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) pattern += '\\';
    pattern += c;
  }
  pattern += "$";
  rules_.insert(rules_.begin(), ModuleRule{pattern, compile(pattern, "gguf mix"), !format, format});
}

void Recipe::append_exact(const std::string& module, const QuantFormat& format) {
  const std::string pattern = str_cat("^", escape_regex(module), "$");
  rules_.push_back(ModuleRule{pattern, compile(pattern, "--target-bpw plan"), false, format});
}

void Recipe::load_file(const std::string& path) {
  const auto j = read_json_file(path);
  const bool has_rules = j.is_object() && j.contains("rules");
  const bool has_ignore = j.is_object() && j.contains("ignore");
  if (!j.is_object() || (!has_rules && !has_ignore) || (has_rules && !j["rules"].is_array()))
    fail_input(path, ": a recipe is a JSON object with a \"rules\" array and/or an \"ignore\" list");
  if (has_rules) load_rules(j["rules"], path);
  if (has_ignore) load_ignore(j["ignore"], path);
}

// llm-compressor's / compressed-tensors' ignore list, as users paste it from their recipes:
// a module name matches exactly, "re:PATTERN" matches from the name's start (Python's
// re.match). Appended after the rules, so an ignored module stays unquantized.
void Recipe::load_ignore(const nlohmann::json& list, const std::string& path) {
  if (!list.is_array()) fail_input(path, ": \"ignore\" must be a list of module names or \"re:\" patterns");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = str_cat(path, ": ignore[", i, "]");
    if (!list[i].is_string()) fail_input(where, " must be a string (a module name or \"re:PATTERN\")");
    const std::string entry = list[i].get<std::string>();
    const bool is_re = entry.rfind("re:", 0) == 0;
    // str_cat, not operator+: GCC 12 warns falsely (-Wrestrict) on "lit" + std::string&&.
    const std::string pattern = is_re ? str_cat("^(?:", entry.substr(3), ")") : str_cat("^", escape_regex(entry), "$");
    rules_.push_back({entry, compile(pattern, where), true, std::nullopt});
  }
}

void Recipe::load_rules(const nlohmann::json& rules, const std::string& path) {
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& r = rules[i];
    const std::string where = str_cat(path, ": rules[", i, "]");
    if (!r.is_object() || !r.contains("match") || !r["match"].is_string())
      fail_input(where, " needs a \"match\" string (a regex on module names)");
    ModuleRule rule{r["match"].get<std::string>(), {}, false, std::nullopt};
    rule.regex = compile(rule.pattern, where);
    if (r.contains("skip")) {
      if (!r["skip"].is_boolean()) fail_input(where, ": \"skip\" must be true or false");
      rule.skip = r["skip"].get<bool>();
    }
    if (r.contains("format")) {
      if (!r["format"].is_string()) fail_input(where, ": \"format\" must be a string like \"int8\"");
      const int64_t group = r.contains("group_size") && r["group_size"].is_number_integer()
                                ? r["group_size"].get<int64_t>()
                                : 0;
      const bool sym = r.contains("sym") && r["sym"].is_boolean() ? r["sym"].get<bool>() : default_.symmetric;
      try {
        rule.format = QuantFormat::parse(r["format"].get<std::string>(), group, sym);
      } catch (const InputError& e) {
        fail_input(where, ": ", e.what());
      }
    }
    if (!rule.skip && !rule.format) fail_input(where, " has neither \"skip\" nor \"format\"");
    rules_.push_back(std::move(rule));
  }
}

std::optional<QuantFormat> Recipe::format_for(const std::string& module) const {
  std::optional<QuantFormat> f = default_;
  for (const auto& r : rules_)
    if (std::regex_search(module, r.regex)) f = r.skip ? std::nullopt : r.format;
  return f;
}

}  // namespace qshard
