// The one object that talks to MPI (and, with the CUDA backend, NCCL). Nothing else
// in qshard calls MPI directly. A plain run without mpirun is a world of one rank.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace qshard {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void barrier() = 0;
  // In-place elementwise sums over all ranks. Reduction order is fixed by MPI for a
  // given rank count, which keeps runs deterministic.
  virtual void allreduce_sum(double* data, int64_t n) = 0;
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  virtual void allreduce_max(int64_t* data, int64_t n) = 0;
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // Every rank's `local` concatenated in rank order, on `root` only (empty elsewhere).
  virtual std::vector<double> gather(const std::vector<double>& local, int root) = 0;
  // Ends every rank of the job: used when one rank fails and the others would wait
  // forever in a collective.
  [[noreturn]] virtual void abort(int exit_code) = 0;
  bool is_root() const { return rank() == 0; }
};

// Initializes MPI (once per process) and returns MPI_COMM_WORLD; finalizes MPI when
// the last communicator is destroyed.
std::unique_ptr<Communicator> make_world_communicator(int* argc, char*** argv);

}  // namespace qshard
