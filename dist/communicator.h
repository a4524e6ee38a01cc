// The one object that talks to MPI (and, with the CUDA backend, NCCL). Nothing else
// in qshard calls MPI or NCCL directly. A plain run without mpirun is a world of one
// rank. Host buffers travel over MPI; device buffers (Device::Cuda) over NCCL, whose
// communicator is bootstrapped over MPI (rank 0's ncclUniqueId broadcast) on first use.
//
// Every collective counts the bytes it moves by kind (Traffic), so the pipeline can
// report "statistics / weights / results per layer" from the code's own accounting.
// The count is the payload each rank holds after the call (allreduce: the buffer;
// broadcast: the buffer; allgatherv: everything gathered), not the wire traffic of the
// algorithm MPI picks (a ring allreduce sends about 2·(N−1)/N of the payload per rank).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace qshard {

enum class Traffic : uint8_t {
  Statistics,  // Hessians and other calibration statistics (allreduce)
  Weights,     // a layer's original weights, owner → everyone (broadcast)
  Results,     // quantized rows, every rank → everyone (allgather)
  Control,     // sizes, flags, scalars, calibration tokens, eval sums
};
constexpr int kTrafficKinds = 4;
const char* traffic_name(Traffic t);  // "statistics", ...

struct TrafficCounters {
  std::array<uint64_t, kTrafficKinds> bytes{};
  std::array<uint64_t, kTrafficKinds> calls{};
  uint64_t of(Traffic t) const { return bytes[size_t(t)]; }
  TrafficCounters operator-(const TrafficCounters& o) const;
};

class Communicator {
 public:
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  // Rank among the processes on this host (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, or
  // a shared-memory split of the world); picks the GPU.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  // "rank 3 of 8 on node12": for error messages.
  std::string where() const;

  void barrier();

  // In-place elementwise sums over all ranks. The reduction order is fixed by MPI
  // (NCCL) for a given rank count, which keeps runs deterministic.
  void allreduce_sum(double* data, int64_t n, Traffic kind = Traffic::Control,
                     Device where = Device::Host);
  void allreduce_sum(float* data, int64_t n, Traffic kind = Traffic::Control,
                     Device where = Device::Host);
  void allreduce_max(int64_t* data, int64_t n);  // host, Control
  void allreduce_max(double* data, int64_t n);   // host, Control

  void broadcast(void* data, int64_t bytes, int root, Traffic kind = Traffic::Control,
                 Device where = Device::Host);

  // Rank r's `bytes[r]` bytes at `mine` land at offset Σ_{q<r} bytes[q] of `out` on
  // every rank (`out` holds Σ bytes). Every rank passes the same `bytes`.
  void allgatherv(const void* mine, void* out, const std::vector<int64_t>& bytes,
                  Traffic kind = Traffic::Control, Device where = Device::Host);
  // One value per rank, in rank order.
  std::vector<int64_t> allgather(int64_t value);
  // Every rank's bytes, in rank order (sizes exchanged first).
  std::vector<std::vector<uint8_t>> allgather_bytes(const std::vector<uint8_t>& mine,
                                                    Traffic kind = Traffic::Control);

  // Personalized exchange: send[r] goes to rank r; returns what each rank sent to this
  // one, in rank order (own part copied). Pairwise rounds, so no count is limited to int.
  // Counts the bytes received from other ranks.
  std::vector<std::vector<uint8_t>> alltoallv_bytes(const std::vector<std::vector<uint8_t>>& send,
                                                    Traffic kind = Traffic::Control);

  // Every rank's `local` concatenated in rank order, on `root` only (empty elsewhere).
  std::vector<double> gather(const std::vector<double>& local, int root);

  // Ends every rank of the job: used when one rank fails and the others would wait
  // forever in a collective.
  [[noreturn]] void abort(int exit_code);

  // Device (NCCL) collectives are possible in this build and on this machine.
  bool device_collectives_available();

  const TrafficCounters& traffic() const { return traffic_; }

  // The MPI_Comm, as an opaque handle, for libraries that take one (parallel HDF5 in
  // dist/hdf5_mpio.cpp). Only code in dist/ may use it.
  void* mpi_comm_handle() const;

 private:
  // Both sum overloads: byte accounting, then NCCL (device buffers) or MPI (host).
  template <class T>
  void allreduce_sum_in_place(T* data, int64_t n, Traffic kind, Device where);
  friend std::unique_ptr<Communicator> make_world_communicator(int* argc, char*** argv);
// A world of one rank that never calls MPI: for work one rank does alone with code written
// for a communicator (an MoE expert fitted by its owner, pipeline/moe_experts.h).
std::unique_ptr<Communicator> make_self_communicator();
  friend std::unique_ptr<Communicator> make_self_communicator();
  struct Nccl;  // NCCL state (CUDA builds)
  Communicator() = default;
  void init(int* argc, char*** argv);
  void count(Traffic kind, uint64_t bytes);
  Nccl& nccl();

  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string host_ = "?";
  bool owns_mpi_ = false;
  TrafficCounters traffic_;
  std::unique_ptr<Nccl> nccl_;
};

// Initializes MPI (once per process) and returns MPI_COMM_WORLD; finalizes MPI when
// the communicator that initialized it is destroyed.
std::unique_ptr<Communicator> make_world_communicator(int* argc, char*** argv);
// A world of one rank that never calls MPI: for work one rank does alone with code written
// for a communicator (an MoE expert fitted by its owner, pipeline/moe_experts.h).
std::unique_ptr<Communicator> make_self_communicator();

}  // namespace qshard
