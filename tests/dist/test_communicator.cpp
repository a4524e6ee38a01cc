// The Communicator at whatever rank count mpirun gives. Inputs are integer-valued so
// every reduction has one exact answer, whatever the order.
#include <gtest/gtest.h>

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
