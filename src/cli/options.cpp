#include "cli/options.h"

#include <iostream>

#include "core/error.h"

namespace qshard::cli {

bool parse_options(const std::vector<std::string>& args, const char* usage,
                   const po::options_description& desc, po::variables_map& vm, bool print,
                   const po::positional_options_description* positional) {
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& a : rest)
    if (a == "--help" || a == "-h") {
      if (print) std::cout << usage << "\n\n" << desc << std::endl;
      return false;
    }
  try {
    po::command_line_parser parser(rest);
    parser.options(desc);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    fail_input(e.what(), " (see 'qshard ", args[0], " --help')");
  }
  return true;
}

}  // namespace qshard::cli
