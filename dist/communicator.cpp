#include "dist/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>

#include "core/error.h"

namespace qshard {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI call ", what, " failed: ", std::string(msg, len));
}
#define QS_MPI(call) check_mpi((call), #call)

// MPI counts are int: split long buffers so a 28672² Hessian (822M floats) still works.
constexpr int64_t kMaxChunk = int64_t(1) << 30;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(int* argc, char*** argv) {
    int initialized = 0;
    QS_MPI(MPI_Initialized(&initialized));
    if (!initialized) {
      QS_MPI(MPI_Init(argc, argv));
      owns_mpi_ = true;
    }
    // Errors come back as codes so they turn into one clear line, not an MPI abort.
    QS_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    QS_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    QS_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_mpi_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override { QS_MPI(MPI_Barrier(MPI_COMM_WORLD)); }

  void allreduce_sum(double* data, int64_t n) override { allreduce(data, n, MPI_DOUBLE, MPI_SUM); }
  void allreduce_sum(float* data, int64_t n) override { allreduce(data, n, MPI_FLOAT, MPI_SUM); }
  void allreduce_max(int64_t* data, int64_t n) override { allreduce(data, n, MPI_INT64_T, MPI_MAX); }

  void broadcast(void* data, int64_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (int64_t off = 0; off < bytes; off += kMaxChunk)
      QS_MPI(MPI_Bcast(p + off, int(std::min(kMaxChunk, bytes - off)), MPI_BYTE, root, MPI_COMM_WORLD));
  }

  std::vector<double> gather(const std::vector<double>& local, int root) override {
    QS_ASSERT(local.size() < size_t(kMaxChunk), "gather of ", local.size(), " values");
    int n = int(local.size());
    std::vector<int> counts(size_), displs(size_);
    QS_MPI(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, root, MPI_COMM_WORLD));
    std::vector<double> out;
    if (rank_ == root) {
      int64_t total = 0;
      for (int r = 0; r < size_; ++r) {
        displs[r] = int(total);
        total += counts[r];
      }
      QS_ASSERT(total < kMaxChunk, "gather of ", total, " values");
      out.resize(size_t(total));
    }
    QS_MPI(MPI_Gatherv(local.data(), n, MPI_DOUBLE, out.data(), counts.data(), displs.data(),
                       MPI_DOUBLE, root, MPI_COMM_WORLD));
    return out;
  }

  [[noreturn]] void abort(int exit_code) override {
    if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::exit(exit_code);
  }

 private:
  void allreduce(void* data, int64_t n, MPI_Datatype type, MPI_Op op) {
    int type_size = 0;
    QS_MPI(MPI_Type_size(type, &type_size));
    auto* p = static_cast<char*>(data);
    for (int64_t off = 0; off < n; off += kMaxChunk)
      QS_MPI(MPI_Allreduce(MPI_IN_PLACE, p + off * type_size, int(std::min(kMaxChunk, n - off)),
                           type, op, MPI_COMM_WORLD));
  }

  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_world_communicator(int* argc, char*** argv) {
  return std::make_unique<MpiCommunicator>(argc, argv);
}

}  // namespace qshard
