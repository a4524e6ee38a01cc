#include "dist/communicator.h"

#include <mpi.h>

#include <algorithm>
#include <type_traits>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/error.h"
#ifdef QSHARD_HAVE_CUDA
#include "dist/nccl_comm.h"
#endif

namespace qshard {

const char* traffic_name(Traffic t) {
  switch (t) {
    case Traffic::Statistics: return "statistics";
    case Traffic::Weights: return "weights";
    case Traffic::Results: return "results";
    case Traffic::Control: return "control";
  }
  return "?";
}

TrafficCounters TrafficCounters::operator-(const TrafficCounters& o) const {
  TrafficCounters d;
  for (int k = 0; k < kTrafficKinds; ++k) {
    d.bytes[size_t(k)] = bytes[size_t(k)] - o.bytes[size_t(k)];
    d.calls[size_t(k)] = calls[size_t(k)] - o.calls[size_t(k)];
  }
  return d;
}

namespace {

// Every MPI return code is checked; the message names the call, file:line, rank and host.
void check_mpi(int rc, const char* what, const char* file, int line, const Communicator* c) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("MPI call ", what, " failed at ", file, ":", line, " on ", c ? c->where() : std::string("?"),
       ": ", std::string(msg, size_t(len)));
}
#define QS_MPI(call) check_mpi((call), #call, __FILE__, __LINE__, this)

// MPI counts are int: split long buffers so a 28672² Hessian (822M floats) still works.
constexpr int64_t kMaxChunk = int64_t(1) << 30;

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x >= 0 && x < (1 << 20)) ? int(x) : -1;
}

}  // namespace

struct Communicator::Nccl {
#ifdef QSHARD_HAVE_CUDA
  std::unique_ptr<NcclComm> comm;
#endif
};

Communicator::~Communicator() {
  nccl_.reset();  // NCCL before MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

void Communicator::init(int* argc, char*** argv) {
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
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  QS_MPI(MPI_Get_processor_name(name, &len));
  host_.assign(name, size_t(len));

  // The processes sharing this host: a shared-memory split gives the count (and the
  // local rank when no launcher says it).
  MPI_Comm node = MPI_COMM_NULL;
  QS_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  int split_rank = 0;
  QS_MPI(MPI_Comm_rank(node, &split_rank));
  QS_MPI(MPI_Comm_size(node, &local_size_));
  QS_MPI(MPI_Comm_free(&node));
  local_rank_ = split_rank;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const int v = env_int(var);
    if (v >= 0) {
      local_rank_ = v;
      break;
    }
  }
}

std::string Communicator::where() const {
  return str_cat("rank ", rank_, " of ", size_, " on ", host_);
}

void Communicator::count(Traffic kind, uint64_t bytes) {
  traffic_.bytes[size_t(kind)] += bytes;
  traffic_.calls[size_t(kind)] += 1;
}

void* Communicator::mpi_comm_handle() const {
  static MPI_Comm world = MPI_COMM_WORLD;
  return &world;
}

bool Communicator::device_collectives_available() {
#ifdef QSHARD_HAVE_CUDA
  return NcclComm::available(nullptr);
#else
  return false;
#endif
}

Communicator::Nccl& Communicator::nccl() {
#ifdef QSHARD_HAVE_CUDA
  if (!nccl_) {
    std::string why;
    // Every rank must agree before the collective bootstrap, or some would wait forever.
    int64_t missing = NcclComm::available(&why) ? 0 : 1;
    allreduce_max(&missing, 1);
    if (missing)
      fail("device collectives need a GPU on every rank; ", where(),
           why.empty() ? std::string() : " has none (" + why + ")");
    auto n = std::make_unique<Nccl>();
    n->comm = std::make_unique<NcclComm>(rank_, size_, local_rank_, where(),
                                         [this](void* p, int64_t b) { broadcast(p, b, 0); });
    nccl_ = std::move(n);
  }
  return *nccl_;
#else
  fail("device collectives: this qshard was built without CUDA (", where(), ")");
#endif
}

void Communicator::barrier() { QS_MPI(MPI_Barrier(MPI_COMM_WORLD)); }

namespace {

struct MpiAllreduce {
  const Communicator* self;
  void operator()(void* data, int64_t n, MPI_Datatype type, MPI_Op op) const {
    int type_size = 0;
    check_mpi(MPI_Type_size(type, &type_size), "MPI_Type_size", __FILE__, __LINE__, self);
    auto* p = static_cast<char*>(data);
    for (int64_t off = 0; off < n; off += kMaxChunk)
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, p + off * type_size, int(std::min(kMaxChunk, n - off)),
                              type, op, MPI_COMM_WORLD),
                "MPI_Allreduce", __FILE__, __LINE__, self);
  }
};

}  // namespace

template <class T>
void Communicator::allreduce_sum_in_place(T* data, int64_t n, Traffic kind, Device where) {
  count(kind, uint64_t(n) * sizeof(T));
  if (size_ == 1) return;
  if (where == Device::Cuda) {
#ifdef QSHARD_HAVE_CUDA
    return nccl().comm->allreduce_sum(data, n);
#else
    nccl();
#endif
  }
  MpiAllreduce{this}(data, n, std::is_same_v<T, double> ? MPI_DOUBLE : MPI_FLOAT, MPI_SUM);
}

void Communicator::allreduce_sum(double* data, int64_t n, Traffic kind, Device where) {
  allreduce_sum_in_place(data, n, kind, where);
}

void Communicator::allreduce_sum(float* data, int64_t n, Traffic kind, Device where) {
  allreduce_sum_in_place(data, n, kind, where);
}

void Communicator::allreduce_max(int64_t* data, int64_t n) {
  count(Traffic::Control, uint64_t(n) * sizeof(int64_t));
  if (size_ > 1) MpiAllreduce{this}(data, n, MPI_INT64_T, MPI_MAX);
}

void Communicator::allreduce_max(double* data, int64_t n) {
  count(Traffic::Control, uint64_t(n) * sizeof(double));
  if (size_ > 1) MpiAllreduce{this}(data, n, MPI_DOUBLE, MPI_MAX);
}

void Communicator::broadcast(void* data, int64_t bytes, int root, Traffic kind, Device where) {
  QS_ASSERT(root >= 0 && root < size_, "broadcast from rank ", root, " of ", size_);
  count(kind, uint64_t(bytes));
  if (size_ == 1) return;
  if (where == Device::Cuda) {
#ifdef QSHARD_HAVE_CUDA
    return nccl().comm->broadcast(data, bytes, root);
#else
    nccl();
#endif
  }
  auto* p = static_cast<char*>(data);
  for (int64_t off = 0; off < bytes; off += kMaxChunk)
    QS_MPI(MPI_Bcast(p + off, int(std::min(kMaxChunk, bytes - off)), MPI_BYTE, root, MPI_COMM_WORLD));
}

void Communicator::allgatherv(const void* mine, void* out, const std::vector<int64_t>& bytes,
                              Traffic kind, Device where) {
  QS_ASSERT(int(bytes.size()) == size_, "allgatherv with ", bytes.size(), " counts on ", size_, " ranks");
  int64_t total = 0, offset = 0;
  for (int r = 0; r < size_; ++r) {
    QS_ASSERT(bytes[size_t(r)] >= 0, "negative allgatherv count");
    if (r < rank_) offset += bytes[size_t(r)];
    total += bytes[size_t(r)];
  }
  count(kind, uint64_t(total));
  auto* o = static_cast<char*>(out);
  if (where == Device::Cuda && size_ > 1) {
#ifdef QSHARD_HAVE_CUDA
    return nccl().comm->allgatherv(mine, out, bytes);
#else
    nccl();
#endif
  }
  if (size_ == 1 || total >= kMaxChunk) {
    // One rank, or counts (or displacements) past int: each rank's part in turn. The
    // MPI broadcast chunks long buffers itself.
    if (bytes[size_t(rank_)] > 0 && o + offset != mine)
      std::memmove(o + offset, mine, size_t(bytes[size_t(rank_)]));
    int64_t off = 0;
    for (int r = 0; r < size_ && size_ > 1; ++r) {
      auto* p = o + off;
      for (int64_t c = 0; c < bytes[size_t(r)]; c += kMaxChunk)
        QS_MPI(MPI_Bcast(p + c, int(std::min(kMaxChunk, bytes[size_t(r)] - c)), MPI_BYTE, r,
                         MPI_COMM_WORLD));
      off += bytes[size_t(r)];
    }
    return;
  }
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  int64_t d = 0;
  for (int r = 0; r < size_; ++r) {
    counts[size_t(r)] = int(bytes[size_t(r)]);
    displs[size_t(r)] = int(d);
    d += bytes[size_t(r)];
  }
  QS_MPI(MPI_Allgatherv(mine, counts[size_t(rank_)], MPI_BYTE, o, counts.data(), displs.data(),
                        MPI_BYTE, MPI_COMM_WORLD));
}

std::vector<int64_t> Communicator::allgather(int64_t value) {
  std::vector<int64_t> all(static_cast<size_t>(size_));
  count(Traffic::Control, uint64_t(size_) * sizeof(int64_t));
  if (size_ == 1) {
    all[0] = value;
    return all;
  }
  QS_MPI(MPI_Allgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, MPI_COMM_WORLD));
  return all;
}

std::vector<std::vector<uint8_t>> Communicator::allgather_bytes(const std::vector<uint8_t>& mine,
                                                                Traffic kind) {
  const std::vector<int64_t> sizes = allgather(int64_t(mine.size()));
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  std::vector<uint8_t> flat(static_cast<size_t>(total));
  allgatherv(mine.data(), flat.data(), sizes, kind);
  std::vector<std::vector<uint8_t>> out(static_cast<size_t>(size_));
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    out[size_t(r)].assign(flat.begin() + off, flat.begin() + off + sizes[size_t(r)]);
    off += sizes[size_t(r)];
  }
  return out;
}

std::vector<std::vector<uint8_t>> Communicator::alltoallv_bytes(const std::vector<std::vector<uint8_t>>& send,
                                                                Traffic kind) {
  QS_ASSERT(int(send.size()) == size_, "alltoallv_bytes: ", send.size(), " parts for ", size_, " ranks");
  std::vector<std::vector<uint8_t>> got(static_cast<size_t>(size_));
  got[size_t(rank_)] = send[size_t(rank_)];
  uint64_t received = 0;
  // Round s: send to rank + s, receive from rank − s; sizes first, then chunks under int.
  for (int s = 1; s < size_; ++s) {
    const int to = (rank_ + s) % size_, from = (rank_ - s + size_) % size_;
    int64_t out_n = int64_t(send[size_t(to)].size()), in_n = 0;
    QS_MPI(MPI_Sendrecv(&out_n, 1, MPI_INT64_T, to, 0, &in_n, 1, MPI_INT64_T, from, 0, MPI_COMM_WORLD,
                        MPI_STATUS_IGNORE));
    std::vector<uint8_t>& in = got[size_t(from)];
    in.resize(size_t(in_n));
    for (int64_t c = 0; c < std::max(out_n, in_n); c += kMaxChunk) {
      const int so = int(std::clamp<int64_t>(out_n - c, 0, kMaxChunk));
      const int si = int(std::clamp<int64_t>(in_n - c, 0, kMaxChunk));
      QS_MPI(MPI_Sendrecv(so ? send[size_t(to)].data() + c : nullptr, so, MPI_BYTE, to, 1,
                          si ? in.data() + c : nullptr, si, MPI_BYTE, from, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    }
    received += uint64_t(in_n);
  }
  count(kind, received);
  return got;
}

std::vector<double> Communicator::gather(const std::vector<double>& local, int root) {
  QS_ASSERT(local.size() < size_t(kMaxChunk), "gather of ", local.size(), " values");
  count(Traffic::Control, local.size() * sizeof(double));
  int n = int(local.size());
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  QS_MPI(MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, root, MPI_COMM_WORLD));
  std::vector<double> out;
  if (rank_ == root) {
    int64_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[size_t(r)] = int(total);
      total += counts[size_t(r)];
    }
    QS_ASSERT(total < kMaxChunk, "gather of ", total, " values");
    out.resize(size_t(total));
  }
  QS_MPI(MPI_Gatherv(local.data(), n, MPI_DOUBLE, out.data(), counts.data(), displs.data(),
                     MPI_DOUBLE, root, MPI_COMM_WORLD));
  return out;
}

void Communicator::abort(int exit_code) {
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

std::unique_ptr<Communicator> make_world_communicator(int* argc, char*** argv) {
  std::unique_ptr<Communicator> c(new Communicator());
  c->init(argc, argv);
  return c;
}

std::unique_ptr<Communicator> make_self_communicator() {
  return std::unique_ptr<Communicator>(new Communicator());
}

}  // namespace qshard
