// Errors are exceptions carrying one line a user can act on. Library code throws;
// main() turns the exception into that line and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace qshard {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from the user (files, options): exit code 2 instead of 1.
class InputError : public Error {
 public:
  using Error::Error;
};

template <class... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(str_cat(std::forward<Parts>(parts)...));
}

template <class... Parts>
[[noreturn]] void fail_input(Parts&&... parts) {
  throw InputError(str_cat(std::forward<Parts>(parts)...));
}

}  // namespace qshard

// Internal invariants: a failure here is a bug in qshard, so the message names the
// source location rather than a user action.
#define QS_ASSERT(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond))                                                                     \
      ::qshard::fail("internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " ", \
                     ##__VA_ARGS__);                                                 \
  } while (0)
