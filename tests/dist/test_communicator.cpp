// The Communicator at whatever rank count mpirun gives. Inputs are integer-valued so
// every reduction has one exact answer, whatever the order.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "dist/communicator.h"
#include "dist/partition.h"

using namespace qshard;

namespace {
Communicator& world() {
  static auto comm = make_world_communicator(nullptr, nullptr);
  return *comm;
}
}  // namespace

TEST(Communicator, AllreduceSumIsExact) {
  Communicator& c = world();
  std::vector<double> d(1000);
  std::vector<float> f(1000);
  for (int i = 0; i < 1000; ++i) d[i] = f[i] = float(i * (c.rank() + 1));
  c.allreduce_sum(d.data(), int64_t(d.size()));
  c.allreduce_sum(f.data(), int64_t(f.size()));
  const int n = c.size();
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(d[i], double(i) * n * (n + 1) / 2) << i;
    EXPECT_EQ(f[i], float(double(i) * n * (n + 1) / 2)) << i;
  }
  int64_t m = c.rank() * 10;
  c.allreduce_max(&m, 1);
  EXPECT_EQ(m, (c.size() - 1) * 10);
}

TEST(Communicator, GatherConcatenatesInRankOrder) {
  Communicator& c = world();
  // Rank r contributes r values r*100 + i: uneven counts, rank 0 contributes none.
  std::vector<double> mine;
  for (int i = 0; i < c.rank(); ++i) mine.push_back(c.rank() * 100 + i);
  const std::vector<double> all = c.gather(mine, 0);
  if (c.is_root()) {
    std::vector<double> want;
    for (int r = 0; r < c.size(); ++r)
      for (int i = 0; i < r; ++i) want.push_back(r * 100 + i);
    EXPECT_EQ(all, want);
  } else {
    EXPECT_TRUE(all.empty());
  }
}

TEST(Communicator, BroadcastFromRoot) {
  Communicator& c = world();
  std::vector<int32_t> v(257, c.is_root() ? 7 : -1);
  c.broadcast(v.data(), int64_t(v.size() * sizeof(int32_t)), 0);
  for (int32_t x : v) EXPECT_EQ(x, 7);
  c.barrier();
}

TEST(Partition, SplitRangeCoversEverythingOnce) {
  for (int64_t n : {0, 1, 7, 100, 101})
    for (int parts : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int i = 0; i < parts; ++i) {
        const Range r = split_range(n, parts, i);
        EXPECT_EQ(r.begin, next);
        EXPECT_LE(r.size(), n / parts + 1);
        EXPECT_GE(r.size(), n / parts);
        next = r.end;
      }
      EXPECT_EQ(next, n);
    }
}

TEST(Partition, AlignedSplitStartsOnUnitsAndCoversOnce) {
  for (int64_t n : {0, 1, 15, 16, 17, 256, 1000})
    for (int parts : {1, 2, 3, 8}) {
      int64_t next = 0;
      for (int i = 0; i < parts; ++i) {
        const Range r = split_range_aligned(n, parts, i, 16);
        EXPECT_EQ(r.begin, next);
        EXPECT_TRUE(r.begin % 16 == 0 || r.begin == n);
        next = r.end;
      }
      EXPECT_EQ(next, n);
    }
}

TEST(Communicator, AllgathervUnevenInRankOrder) {
  Communicator& c = world();
  // Rank r contributes r + 1 bytes of value r*10 + i; one rank's part is the whole
  // buffer at one rank, uneven everywhere else.
  std::vector<int64_t> bytes;
  for (int r = 0; r < c.size(); ++r) bytes.push_back(r + 1);
  std::vector<uint8_t> mine(size_t(c.rank() + 1));
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = uint8_t(c.rank() * 10 + int(i));
  int64_t total = 0;
  for (int64_t b : bytes) total += b;
  std::vector<uint8_t> out(size_t(total), 0xEE);
  c.allgatherv(mine.data(), out.data(), bytes, Traffic::Results);
  std::vector<uint8_t> want;
  for (int r = 0; r < c.size(); ++r)
    for (int i = 0; i <= r; ++i) want.push_back(uint8_t(r * 10 + i));
  EXPECT_EQ(out, want);

  const std::vector<int64_t> ranks = c.allgather(c.rank() * 3 + 1);
  ASSERT_EQ(int(ranks.size()), c.size());
  for (int r = 0; r < c.size(); ++r) EXPECT_EQ(ranks[size_t(r)], r * 3 + 1);

  const auto parts = c.allgather_bytes(mine, Traffic::Control);
  ASSERT_EQ(int(parts.size()), c.size());
  for (int r = 0; r < c.size(); ++r) EXPECT_EQ(parts[size_t(r)].size(), size_t(r + 1));
}

// Rank s sends rank d (s + 1) · d + 1 bytes of value 16 s + d, and nothing to itself (an
// empty part); every rank checks what it got and the bytes counted (from other ranks only).
TEST(Communicator, AlltoallvPersonalizedInRankOrder) {
  Communicator& c = world();
  std::vector<std::vector<uint8_t>> send(static_cast<size_t>(c.size()));
  for (int d = 0; d < c.size(); ++d) send[size_t(d)].assign(size_t((c.rank() + 1) * d + 1), uint8_t(16 * c.rank() + d));
  send[size_t(c.rank())].clear();  // nothing to itself: an empty part
  const TrafficCounters before = c.traffic();
  const auto got = c.alltoallv_bytes(send, Traffic::Statistics);
  ASSERT_EQ(int(got.size()), c.size());
  uint64_t expect = 0;
  for (int s = 0; s < c.size(); ++s) {
    const size_t n = s == c.rank() ? 0 : size_t((s + 1) * c.rank() + 1);
    EXPECT_EQ(got[size_t(s)], std::vector<uint8_t>(n, uint8_t(16 * s + c.rank()))) << "from rank " << s;
    if (s != c.rank()) expect += n;
  }
  EXPECT_EQ((c.traffic() - before).of(Traffic::Statistics), expect);
}

TEST(Communicator, AllreduceMaxDouble) {
  Communicator& c = world();
  double v[2] = {double(c.rank()) + 0.5, -double(c.rank())};
  c.allreduce_max(v, 2);
  EXPECT_EQ(v[0], c.size() - 0.5);
  EXPECT_EQ(v[1], 0.0);
}

TEST(Communicator, CountsBytesByKind) {
  Communicator& c = world();
  const TrafficCounters before = c.traffic();
  std::vector<float> stats(100, 1.0f);
  c.allreduce_sum(stats.data(), 100, Traffic::Statistics);
  std::vector<uint8_t> w(64);
  c.broadcast(w.data(), 64, c.size() - 1, Traffic::Weights);
  std::vector<int64_t> bytes(static_cast<size_t>(c.size()), 8);
  std::vector<uint8_t> mine(8), out(size_t(8 * c.size()));
  c.allgatherv(mine.data(), out.data(), bytes, Traffic::Results);
  const TrafficCounters d = c.traffic() - before;
  EXPECT_EQ(d.of(Traffic::Statistics), 400u);
  EXPECT_EQ(d.of(Traffic::Weights), 64u);
  EXPECT_EQ(d.of(Traffic::Results), uint64_t(8 * c.size()));
  EXPECT_EQ(d.calls[size_t(Traffic::Statistics)], 1u);
  for (float x : stats) EXPECT_EQ(x, float(c.size()));
}

TEST(Communicator, LocalRankIsConsistent) {
  Communicator& c = world();
  // mpirun puts every rank of these tests on one host.
  EXPECT_GE(c.local_rank(), 0);
  EXPECT_LT(c.local_rank(), c.local_size());
  EXPECT_EQ(c.local_size(), c.size());
  EXPECT_FALSE(c.host().empty());
  EXPECT_NE(c.where().find("rank " + std::to_string(c.rank())), std::string::npos);
  // Local ranks are a permutation of 0..size-1 on one host.
  std::vector<int64_t> all = c.allgather(c.local_rank());
  std::sort(all.begin(), all.end());
  for (int r = 0; r < c.size(); ++r) EXPECT_EQ(all[size_t(r)], r);
}

TEST(Communicator, DeviceCollectivesNeedAGpu) {
  Communicator& c = world();
  if (c.device_collectives_available()) GTEST_SKIP() << "a GPU is present: covered by the GPU job";
  // Without a GPU (or without CUDA in the build) a device collective is refused with a
  // message naming the rank, on every rank alike, instead of hanging.
  float x = 1.0f;
  try {
    c.allreduce_sum(&x, 1, Traffic::Statistics, Device::Cuda);
    if (c.size() > 1) ADD_FAILURE() << "device allreduce without a GPU did not fail";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("rank"), std::string::npos) << e.what();
  }
}
