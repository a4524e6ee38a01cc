// read_act_scheme: the activation quantization a model directory records, so that
// `qshard eval --model OUT` simulates what the export says engines run:
//  - compressed-tensors: config_groups[*].input_activations (INT8 dynamic per token is
//    what qshard simulates; anything else is reported as unsupported) and "ignore";
//  - qshard-hdf5: quantization_config.act_format and .ignore;
//  - fake-quant: config.json["qshard_activation_quant"] = {"format", "ignore"};
//  - anything else (plain, gptq, awq): none.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <regex>
#pragma GCC diagnostic pop
#include <filesystem>

#include "core/error.h"
#include "export/export_common.h"
#include "export/exporter.h"
#include "io/file_io.h"
#include "io/json_file.h"

namespace qshard {

namespace {

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& where) {
  std::vector<std::string> out;
  if (j.is_null()) return out;
  if (!j.is_array()) fail_input(where, ": expected a list of module names");
  for (const auto& e : j) {
    if (!e.is_string()) fail_input(where, ": expected a list of module names");
    out.push_back(e.get<std::string>());
  }
  return out;
}

// compressed-tensors QuantizationArgs of input_activations -> what qshard can simulate.
ActFormat ct_input_format(const nlohmann::json& a, std::string& unsupported) {
  const bool int8_token = a.value("num_bits", 8) == 8 && a.value("type", std::string("int")) == "int" &&
                          a.value("symmetric", true) && a.value("strategy", std::string()) == "token" &&
                          a.contains("dynamic") && a["dynamic"] == true;
  if (int8_token) return ActFormat::Int8;
  unsupported = "input_activations " + a.dump() +
                " (qshard simulates int8 symmetric dynamic per-token activations only)";
  return ActFormat::None;
}

}  // namespace

ActFormat ActScheme::format_for(const std::string& module) const {
  if (format == ActFormat::None) return ActFormat::None;
  for (const auto& p : ignore) {
    if (p == module) return ActFormat::None;
    if (p.rfind("re:", 0) == 0) {
      try {
        if (std::regex_search(module, std::regex(p.substr(3)), std::regex_constants::match_continuous))
          return ActFormat::None;
      } catch (const std::regex_error& e) {
        fail_input("ignore pattern '", p, "' is not a valid regular expression (", e.what(), ")");
      }
    }
  }
  return format;
}

ActScheme read_act_scheme(const std::string& dir) {
  ActScheme s;
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  if (!path_exists(path)) return s;
  const nlohmann::json cfg = read_json_file(path);
  if (!cfg.is_object()) return s;
  try {
    if (cfg.contains(exporting::kActQuantKey)) {
      const auto& a = cfg.at(exporting::kActQuantKey);
      s.format = parse_act_format(a.at("format").get<std::string>());
      s.ignore = string_list(a.value("ignore", nlohmann::json::array()), path);
      return s;
    }
    const auto it = cfg.find("quantization_config");
    if (it == cfg.end() || !it->is_object()) return s;
    const nlohmann::json& qc = *it;
    const std::string method = qc.value("quant_method", std::string());
    if (method == "qshard-hdf5") {
      s.format = parse_act_format(qc.value("act_format", std::string("none")));
      s.ignore = string_list(qc.value("ignore", nlohmann::json::array()), path);
    } else if (method == "compressed-tensors") {
      s.ignore = string_list(qc.value("ignore", nlohmann::json::array()), path);
      bool with = false, without = false;
      for (const auto& [name, group] : qc.at("config_groups").items()) {
        const auto a = group.find("input_activations");
        if (a == group.end() || a->is_null()) {
          without = true;
          continue;
        }
        with = true;
        const ActFormat f = ct_input_format(*a, s.unsupported);
        if (f != ActFormat::None) s.format = f;
      }
      if (with && without && s.unsupported.empty())
        s.unsupported = "config groups with and without input_activations";
      if (!s.unsupported.empty()) s.format = ActFormat::None;
    }
  } catch (const nlohmann::json::exception& e) {
    fail_input(path, ": cannot read the activation quantization it records (", e.what(), ")");
  }
  return s;
}

}  // namespace qshard
