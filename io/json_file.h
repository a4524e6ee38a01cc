// Reading JSON and text files that users hand us (config.json, index files, recipes).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace qshard {

// Parses a JSON file; InputError names the file and the parse position on failure.
nlohmann::json read_json_file(const std::string& path);

// Whole file as bytes; InputError naming the file if it cannot be read.
std::string read_text_file(const std::string& path);

bool path_exists(const std::string& path);

}  // namespace qshard
