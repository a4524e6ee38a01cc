#include "dist/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include "core/error.h"

namespace qshard {

struct NcclComm::State {
  int rank = 0, size = 1, device = 0;
  std::string where;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};

namespace {

// One check for every CUDA/NCCL return code: the statement, file:line, rank and host.
void check_cuda(cudaError_t rc, const char* stmt, const char* file, int line, const std::string& where) {
  if (rc != cudaSuccess)
    fail("CUDA call ", stmt, " failed at ", file, ":", line, " on ", where, ": ",
         cudaGetErrorString(rc));
}
void check_nccl(ncclResult_t rc, const char* stmt, const char* file, int line, const std::string& where) {
  if (rc != ncclSuccess)
    fail("NCCL call ", stmt, " failed at ", file, ":", line, " on ", where, ": ",
         ncclGetErrorString(rc));
}
#define QS_CUDA(call) check_cuda((call), #call, __FILE__, __LINE__, s_->where)
#define QS_NCCL(call) check_nccl((call), #call, __FILE__, __LINE__, s_->where)

}  // namespace

bool NcclComm::available(std::string* why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);  // leaves count unset without a GPU
  if (rc != cudaSuccess) {
    if (why) *why = cudaGetErrorString(rc);
    return false;
  }
  if (count <= 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  return true;
}

NcclComm::NcclComm(int rank, int size, int local_rank, std::string where,
                   const std::function<void(void*, int64_t)>& broadcast_id)
    : s_(std::make_unique<State>()) {
  s_->rank = rank;
  s_->size = size;
  s_->where = std::move(where);
  int count = 0;
  QS_CUDA(cudaGetDeviceCount(&count));
  s_->device = local_rank % count;
  s_->where += " (GPU " + std::to_string(s_->device) + ")";
  QS_CUDA(cudaSetDevice(s_->device));
  ncclUniqueId id{};
  if (rank == 0) QS_NCCL(ncclGetUniqueId(&id));
  broadcast_id(&id, sizeof id);
  QS_NCCL(ncclCommInitRank(&s_->comm, size, id, rank));
  QS_CUDA(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking));
}

NcclComm::~NcclComm() {
  if (!s_) return;
  if (s_->stream) cudaStreamDestroy(s_->stream);
  if (s_->comm) ncclCommDestroy(s_->comm);
}

void NcclComm::allreduce_sum(float* data, int64_t n) {
  QS_NCCL(ncclAllReduce(data, data, size_t(n), ncclFloat32, ncclSum, s_->comm, s_->stream));
  QS_CUDA(cudaStreamSynchronize(s_->stream));
}

void NcclComm::allreduce_sum(double* data, int64_t n) {
  QS_NCCL(ncclAllReduce(data, data, size_t(n), ncclFloat64, ncclSum, s_->comm, s_->stream));
  QS_CUDA(cudaStreamSynchronize(s_->stream));
}

void NcclComm::broadcast(void* data, int64_t bytes, int root) {
  QS_NCCL(ncclBroadcast(data, data, size_t(bytes), ncclUint8, root, s_->comm, s_->stream));
  QS_CUDA(cudaStreamSynchronize(s_->stream));
}

void NcclComm::allgatherv(const void* mine, void* out, const std::vector<int64_t>& bytes) {
  QS_ASSERT(int(bytes.size()) == s_->size, "allgatherv with ", bytes.size(), " counts on ", s_->size, " ranks");
  auto* o = static_cast<char*>(out);
  int64_t off = 0;
  QS_NCCL(ncclGroupStart());
  for (int r = 0; r < s_->size; ++r) {
    const void* send = r == s_->rank ? mine : o + off;
    QS_NCCL(ncclBroadcast(send, o + off, size_t(bytes[size_t(r)]), ncclUint8, r, s_->comm, s_->stream));
    off += bytes[size_t(r)];
  }
  QS_NCCL(ncclGroupEnd());
  QS_CUDA(cudaStreamSynchronize(s_->stream));
}

}  // namespace qshard
