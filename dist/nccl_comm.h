// NCCL collectives on device buffers (CUDA builds only; internal to dist/). No CUDA or
// NCCL types here, so communicator.cpp compiles with the host compiler alone.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace qshard {

class NcclComm {
 public:
  // Whether this process sees a usable GPU; `why` says why not.
  static bool available(std::string* why);
  // Picks GPU local_rank % device count, then ncclCommInitRank with the id that rank 0
  // made and `broadcast_id` (an MPI broadcast from rank 0) handed to every rank.
  NcclComm(int rank, int size, int local_rank, std::string where,
           const std::function<void(void* data, int64_t bytes)>& broadcast_id);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  // Each returns after the collective completed on this rank's stream.
  void allreduce_sum(float* data, int64_t n);
  void allreduce_sum(double* data, int64_t n);
  void broadcast(void* data, int64_t bytes, int root);
  // NCCL has no allgatherv: one broadcast per rank inside a group call.
  void allgatherv(const void* mine, void* out, const std::vector<int64_t>& bytes);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace qshard
