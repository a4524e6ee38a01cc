// Shared Boost.Program_options plumbing: --help handling and errors that name the option.
#pragma once

#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace qshard::cli {

namespace po = boost::program_options;

// Parses args[1..]; returns false if --help was given (and printed the usage).
// `positional`: bare arguments as named options (qshard verify OUT).
bool parse_options(const std::vector<std::string>& args, const char* usage,
                   const po::options_description& desc, po::variables_map& vm, bool print,
                   const po::positional_options_description* positional = nullptr);

}  // namespace qshard::cli
