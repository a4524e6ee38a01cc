// qshard: post-training quantization of large language models.
// main() owns start-up (MPI), sub-command dispatch and turning errors into one line.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/stop.h"
#include "dist/communicator.h"
#include "kernels/cpu/blas_core.h"

namespace qshard::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      {"quantize", "quantize a model (RTN, GPTQ) and export it (gptq, compressed-tensors, fakequant, hdf5)", run_quantize},
      {"eval", "perplexity and KL divergence of a model, optionally against a reference", run_eval},
      {"tokenize", "tokenize a text file into a token file (for eval --tokens, quantize --calib)", run_tokenize},
      {"verify", "check a finished quantize output against the checksums recorded when it was written", run_verify},
      {"info", "describe a model directory, or this build of qshard", run_info},
  };
  return all;
}

namespace {

void print_usage(std::FILE* f) {
  std::fprintf(f,
               "qshard %s: post-training quantization of large language models\n\n"
               "usage: qshard COMMAND [OPTIONS]        (one process is one rank;\n"
               "       mpirun -n N qshard COMMAND ...   under mpirun work is split over N ranks)\n\n"
               "commands:\n",
               QSHARD_VERSION);
  for (const auto& c : commands()) std::fprintf(f, "  %-8s %s\n", c.name, c.summary);
  std::fprintf(f, "\n'qshard COMMAND --help' lists the options of a command.\n");
}

}  // namespace

// One line per failure, not one per rank: most bad input fails on every rank alike, and
// rank 0's abort then ends the others before they print. A rank that failed alone
// (nobody aborts it) prints after the grace period.
void report_error(Communicator* comm, const char* what) {
  if (comm && comm->size() > 1 && comm->rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
  std::fprintf(stderr, "qshard: error: %s\n", what);
  std::fflush(stderr);
}

}  // namespace qshard::cli

int main(int argc, char** argv) {
  using namespace qshard;
  using cli::report_error;
  cpu::reexec_for_blas_core(argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    cli::print_usage(stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::printf("qshard %s\n", QSHARD_VERSION);
    return 0;
  }
  const cli::Command* cmd = nullptr;
  for (const auto& c : cli::commands())
    if (args[0] == c.name) cmd = &c;
  if (!cmd) {
    std::fprintf(stderr, "qshard: error: unknown command '%s' (see 'qshard --help')\n", args[0].c_str());
    return 2;
  }

  // Past a file size limit (ulimit -f) write() should fail with EFBIG, which becomes a
  // clear error, instead of the process dying of SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  std::unique_ptr<Communicator> comm;
  int code = 0;
  try {
    comm = make_world_communicator(&argc, &argv);
    log_set_rank(comm->rank(), comm->size());
    code = cmd->run(args, *comm);
  } catch (const Stopped& e) {
    // Every rank stopped at the same safe point: one line, no abort, the shell's code
    // for "ended by this signal".
    if (!comm || comm->rank() == 0) {
      std::fprintf(stderr, "qshard: %s\n", e.what());
      std::fflush(stderr);
    }
    return 128 + e.signal();
  } catch (const InputError& e) {
    report_error(comm.get(), e.what());
    code = 2;
  } catch (const std::exception& e) {
    report_error(comm.get(), e.what());
    code = 1;
  }
  // A failure on one rank would leave the others waiting in a collective.
  if (code != 0 && comm && comm->size() > 1) comm->abort(code);
  return code;
}
