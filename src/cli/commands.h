// Sub-commands of the qshard binary. Each parses its own options (argv[0] is the
// sub-command name) and returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "dist/communicator.h"

namespace qshard::cli {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args, Communicator& comm);
};

int run_eval(const std::vector<std::string>& args, Communicator& comm);
int run_quantize(const std::vector<std::string>& args, Communicator& comm);
int run_tokenize(const std::vector<std::string>& args, Communicator& comm);
int run_verify(const std::vector<std::string>& args, Communicator& comm);
int run_info(const std::vector<std::string>& args, Communicator& comm);

const std::vector<Command>& commands();

}  // namespace qshard::cli
