#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"

namespace qshard {

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail_input(path, ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path, ": cannot open (", std::strerror(errno), "): check the path and that it is readable");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail_input(path, ": read error (", std::strerror(errno), ")");
  return ss.str();
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

}  // namespace qshard
