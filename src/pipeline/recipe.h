// Which format each Linear gets: the default from the command line, then per-module
// rules matched by regex against the module name ("model.layers.3.mlp.down_proj"), in
// order, the last match winning. Rules come from repeated --skip REGEX options and from
// a JSON recipe file:
//   {"rules": [{"match": "mlp\\.down_proj", "format": "int8", "group_size": 128, "sym": true},
//              {"match": "layers\\.0\\.", "skip": true}],
//    "ignore": ["lm_head", "re:.*mlp\\.gate_proj$"]}   (llm-compressor's list: skipped)
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "quant/format.h"

namespace qshard {

struct ModuleRule {
  std::string pattern;  // as written, for messages and the report
  std::regex regex;
  bool skip = false;
  std::optional<QuantFormat> format;
};

class Recipe {
 public:
  explicit Recipe(QuantFormat default_format) : default_(default_format) {}
  void add_skip(const std::string& pattern);
  // A rule for exactly this module (nullopt: skip), placed before every other rule so
  // that --recipe and --skip still override it (llama.cpp mixes, pipeline/gguf_mix.h).
  void prepend_exact(const std::string& module, const std::optional<QuantFormat>& format);
  // The same placed after every rule, so that it wins (the --target-bpw plan, bpw_plan.h).
  void append_exact(const std::string& module, const QuantFormat& format);
  void load_file(const std::string& path);  // appends its rules
  // nullopt: leave the module unquantized.
  std::optional<QuantFormat> format_for(const std::string& module) const;
  const QuantFormat& default_format() const { return default_; }
  const std::vector<ModuleRule>& rules() const { return rules_; }

 private:
  void load_rules(const nlohmann::json& rules, const std::string& path);
  void load_ignore(const nlohmann::json& list, const std::string& path);

  QuantFormat default_;
  std::vector<ModuleRule> rules_;
};

}  // namespace qshard
