#include "cli/options.h"

#include <iostream>

#include "core/error.h"

namespace qshard::cli {

bool parse_options(const std::vector<std::string>& args, const char* usage,
                   const po::options_description& desc, po::variables_map& vm, bool print) {
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& a : rest)
    if (a == "--help" || a == "-h") {
      if (print) std::cout << usage << "\n\n" << desc << std::endl;
      return false;
    }
  try {
    po::store(po::command_line_parser(rest).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    fail_input(e.what(), " (see 'qshard ", args[0], " --help')");
  }
  return true;
}

}  // namespace qshard::cli
