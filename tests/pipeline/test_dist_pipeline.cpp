// The distributed pieces of the pipeline at whatever rank count mpirun gives (1, 2, 3):
// row-split GPTQ against one rank's GPTQ of the whole weight, the rank-count-invariant
// Hessian sum, layer ownership and the owner's broadcast, MoE experts' owners and their rows. Every rank builds the same
// seeded inputs, so each can check its result against the whole-problem reference.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <mutex>
#include <cstring>
#include <map>
#include <random>

#include "dist/communicator.h"
#include "pipeline/hessian_sum.h"
#include "pipeline/layer_owner.h"
#include "pipeline/moe_experts.h"
#include "pipeline/row_parallel.h"
#include "quant/gptq.h"
#include "quant/rtn.h"

using namespace qshard;

namespace {

Communicator& world() {
  static auto comm = make_world_communicator(nullptr, nullptr);
  return *comm;
}

Tensor seeded(int64_t rows, int64_t cols, uint32_t seed, float scale, bool outliers = false) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensor t = Tensor::zeros(DType::F32, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i)
    t.data<float>()[i] = nd(g) * scale * (outliers && (i % cols) % 13 == 5 ? 9.0f : 1.0f);
  return t;
}

Tensor gram(const Tensor& x) {
  HessianAccumulator acc(x.dim(1));
  acc.add(x);
  return acc.sum();
}

struct Case {
  const char* format;
  int64_t group_size;
  bool act_order, static_groups;
};

// Share of equal codes, the verdict the same on every rank.
double same_codes(const QuantizedLinear& a, const QuantizedLinear& b) {
  EXPECT_EQ(a.codes.size(), b.codes.size());
  size_t same = 0;
  for (size_t i = 0; i < std::min(a.codes.size(), b.codes.size()); ++i) same += a.codes[i] == b.codes[i];
  return double(same) / double(std::max<size_t>(1, a.codes.size()));
}

}  // namespace

// 37 rows: uneven over 2 and 3 ranks; NVFP4 with its tensor-wide scale; act-order with
// static groups; and more ranks than rows is covered by the 3-row case.
TEST(RowParallel, MatchesOneRankGptq) {
  Communicator& c = world();
  const Case cases[] = {{"int4", 32, false, false}, {"int4", 32, true, true}, {"int3", -1, true, false},
                        {"nvfp4", 16, false, false}, {"mxfp4", 32, false, false}};
  for (const Case& k : cases)
    for (int64_t out : {37, 3}) {
      const int64_t in = 64;
      const Tensor w = seeded(out, in, 11, 0.02f);
      const Tensor h = gram(seeded(256, in, 12, 1.0f, true));
      const QuantFormat f = QuantFormat::parse(k.format, k.group_size, true);
      GptqOptions opt;
      opt.block_size = 16;
      opt.act_order = k.act_order;
      opt.static_groups = k.static_groups;
      const auto scheme = Scheme::make(f);
      const GptqResult ref = gptq_quantize(w, h, *scheme, opt, "w");
      const RowParallelResult got = quantize_rows_parallel(
          w, &h, f,
          [&](const Tensor& rows, const Scheme& s) {
            GptqResult g = gptq_quantize(rows, h, s, opt, "w");
            return RowQuantized{std::move(g.q), g.loss, g.damp_escalations};
          },
          c);
      SCOPED_TRACE(std::string(k.format) + " out=" + std::to_string(out));
      EXPECT_EQ(got.q.out_features, out);
      EXPECT_EQ(got.q.tensor_scale, ref.q.tensor_scale);  // global amax, exactly
      // GPTQ codes may flip on rounding ties; the budget is 0.1% (none seen here).
      EXPECT_GE(same_codes(got.q, ref.q), 0.999);
      EXPECT_EQ(got.q.g_idx, ref.q.g_idx);
      EXPECT_EQ(got.q.scales.size(), ref.q.scales.size());
      EXPECT_EQ(got.q.zeros.size(), ref.q.zeros.size());
      EXPECT_NEAR(got.loss, ref.loss, 1e-4 * std::max(1.0, ref.loss));
      EXPECT_GT(got.rel_error, 0.0);
      EXPECT_EQ(got.w_hat.numel(), out * in);
    }
}

TEST(RowParallel, RtnNvfp4TensorScaleIsGlobal) {
  Communicator& c = world();
  // Rank-dependent magnitude by row block: a per-block tensor scale would differ.
  Tensor w = seeded(40, 32, 5, 0.02f);
  for (int64_t r = 30; r < 40; ++r) w.data<float>()[r * 32] = 3.0f;
  const QuantFormat f = QuantFormat::parse("nvfp4", 16, true);
  const auto scheme = Scheme::make(f);
  const QuantizedLinear ref = rtn_quantize(w, *scheme, ClipSearch{}, "w");
  const RowParallelResult got = quantize_rows_parallel(
      w, nullptr, f, [](const Tensor& rows, const Scheme& s) { return RowQuantized{rtn_quantize(rows, s, ClipSearch{}, "w")}; },
      c);
  EXPECT_EQ(got.q.tensor_scale, ref.tensor_scale);
  EXPECT_EQ(got.q.codes, ref.codes);
  EXPECT_EQ(got.q.scales, ref.scales);
}

// GGML 256-blocks (K-quants, IQ4_XS) also carry each super-block's FP16 d and dmin
// (super_scales), which the GGUF export encodes the sub-block codes against: gathered
// like the scales (37 rows: uneven over 2 and 3 ranks).
TEST(RowParallel, SuperBlockScalesAreGathered) {
  Communicator& c = world();
  const Tensor w = seeded(37, 512, 9, 0.02f);
  for (const char* name : {"q4_k", "q6_k", "iq4_xs"}) {
    SCOPED_TRACE(name);
    const QuantFormat f = QuantFormat::parse(name, 0, true);
    const auto scheme = Scheme::make(f);
    const QuantizedLinear ref = rtn_quantize(w, *scheme, ClipSearch{}, "w");
    const RowQuantizer rtn = [](const Tensor& rows, const Scheme& s) {
      return RowQuantized{rtn_quantize(rows, s, ClipSearch{}, "w")};
    };
    const RowParallelResult got = quantize_rows_parallel(w, nullptr, f, rtn, c);
    EXPECT_EQ(ref.super_scales.size(), size_t(37 * 2 * 2));
    EXPECT_EQ(got.q.super_scales, ref.super_scales);
    EXPECT_EQ(got.q.codes, ref.codes);
    EXPECT_EQ(got.q.scales, ref.scales);
  }
}

// The windows split over ranks as the pipeline splits them; the sum must be the bits
// one rank gets from all windows, batched differently.
TEST(HessianSum, SameBitsAtEveryRankCount) {
  Communicator& c = world();
  const int64_t windows = 7, S = 16, d = 24;
  const Tensor x = seeded(windows * S, d, 3, 1.0f, true);
  HessianSum mine(d, S);
  const int64_t per = windows / c.size(), extra = windows % c.size();
  const int64_t begin = c.rank() * per + std::min<int64_t>(c.rank(), extra);
  const int64_t end = begin + per + (c.rank() < extra ? 1 : 0);
  for (int64_t w = begin; w < end; ++w) mine.add(x.rows(w * S, (w + 1) * S));  // one at a time
  mine.allreduce(c);
  EXPECT_EQ(mine.tokens(), (end - begin) * S);
  // The one-rank value: rank 0 holds every window (in one batch), the others none.
  HessianSum all(d, S);
  if (c.is_root()) all.add(x);
  all.allreduce(c);
  ASSERT_EQ(mine.sum().numel(), all.sum().numel());
  EXPECT_EQ(std::memcmp(mine.sum().raw(), all.sum().raw(), all.sum().nbytes()), 0);
  // And symmetric.
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) EXPECT_EQ(mine.sum().data<float>()[i * d + j], mine.sum().data<float>()[j * d + i]);
}

// The fp64 accumulation is threaded by rows of the triangle; every element keeps its
// summation order, so the thread count must not move a bit. d spans several 64-row chunks.
TEST(HessianSum, SameBitsAtEveryThreadCount) {
  Communicator& c = world();
  const int64_t windows = 3, S = 8, d = 200;
  const Tensor x = seeded(windows * S, d, 5, 1.0f, true);
  std::vector<Tensor> sums;
  const int before = omp_get_max_threads();
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    HessianSum h(d, S);
    h.add(x);
    h.allreduce(c);
    sums.push_back(h.sum());
  }
  omp_set_num_threads(before);
  for (const Tensor& s : sums) EXPECT_EQ(std::memcmp(s.raw(), sums[0].raw(), s.nbytes()), 0);
}

TEST(LayerOwnership, ContiguousAndComplete) {
  for (int64_t layers : {1, 4, 7, 80})
    for (int ranks : {1, 2, 3, 8}) {
      const LayerOwnership o(layers, ranks);
      int prev = 0;
      for (int64_t l = 0; l < layers; ++l) {
        const int r = o.owner(l);
        EXPECT_GE(r, prev);
        EXPECT_LE(r, prev + 1);
        prev = r;
      }
      EXPECT_EQ(o.owner(0), 0);
      EXPECT_EQ(o.owner_of_tensor("model.embed_tokens.weight"), 0);
      EXPECT_EQ(o.owner_of_tensor("model.norm.weight"), o.owner(layers - 1));
      EXPECT_EQ(o.owner_of_tensor("lm_head.weight"), o.owner(layers - 1));
      EXPECT_EQ(o.owner_of_tensor("model.layers." + std::to_string(layers - 1) + ".mlp.down_proj.qweight"),
                o.owner(layers - 1));
    }
}

namespace {
class MapSource final : public TensorSource {
 public:
  std::map<std::string, Tensor> t;
  mutable std::mutex m;
  mutable std::vector<std::string> read;  // names get() was asked for (the reader thread too)
  bool contains(const std::string& n) const override { return t.count(n) != 0; }
  Tensor get(const std::string& n) const override {
    std::lock_guard<std::mutex> lock(m);
    read.push_back(n);
    return t.at(n);
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> v;
    for (const auto& [n, _] : t) v.push_back(n);
    return v;
  }
};
}  // namespace

// Only the owner reads; everyone gets the owner's bytes (ranks here see different
// "files": the non-owners' copies are poisoned and must never be read).
TEST(LayerFetcher, OwnerReadsAndBroadcasts) {
  Communicator& c = world();
  const int64_t layers = 5;
  MapSource src;
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Tensor w = Tensor::zeros(DType::BF16, {3, 5});
    for (int i = 0; i < 15; ++i) w.data<uint16_t>()[i] = uint16_t(l * 100 + i);
    Tensor n = Tensor::zeros(DType::F32, {7});
    for (int i = 0; i < 7; ++i) n.data<float>()[i] = float(l) + 0.5f * float(i);
    src.t[p + "a.weight"] = w;
    src.t[p + "norm.weight"] = n;
  }
  const LayerOwnership owners(layers, c.size());
  std::vector<std::string> prefixes;
  for (int64_t l = 0; l < layers; ++l) prefixes.push_back("model.layers." + std::to_string(l) + ".");
  LayerFetcher fetcher(src, prefixes, owners, c);
  const TrafficCounters before = c.traffic();
  fetcher.prefetch(0);
  int64_t owned = 0;
  for (int64_t l = 0; l < layers; ++l) {
    auto t = fetcher.fetch(l);
    fetcher.prefetch(l + 1);
    const bool mine = owners.owner(l) == c.rank();
    owned += mine;
    const std::string p = prefixes[size_t(l)];
    ASSERT_TRUE(t->contains(p + "a.weight"));
    const Tensor w = t->get(p + "a.weight");
    EXPECT_EQ(w.dtype(), DType::BF16);
    EXPECT_EQ(w.shape(), (Shape{3, 5}));
    for (int i = 0; i < 15; ++i) EXPECT_EQ(w.data<uint16_t>()[i], uint16_t(l * 100 + i));
    const Tensor n = t->get(p + "norm.weight");
    for (int i = 0; i < 7; ++i) EXPECT_EQ(n.data<float>()[i], float(l) + 0.5f * float(i));
    EXPECT_EQ(t->names().size(), 2u);
  }
  // Every name this rank read belongs to a layer it owns, and each was read once.
  std::map<std::string, int> reads;
  for (const auto& n : src.read) ++reads[n];
  for (const auto& [n, k] : reads) {
    EXPECT_EQ(k, 1) << n;
    EXPECT_EQ(owners.owner_of_tensor(n), c.rank()) << "rank " << c.rank() << " read " << n;
  }
  // 30 + 28 bytes per layer, each 64-byte aligned: 128 bytes of weights per layer.
  EXPECT_EQ((c.traffic() - before).of(Traffic::Weights), uint64_t(layers * 128));
  std::vector<int64_t> all = c.allgather(owned);
  int64_t total = 0;
  for (int64_t v : all) total += v;
  EXPECT_EQ(total, layers);
}

// Experts split over ranks in contiguous ranges; tensor names map to their routed expert.
TEST(ExpertOwnership, ContiguousAndComplete) {
  for (int ranks = 1; ranks <= 4; ++ranks) {
    const ExpertOwnership o(8, ranks);
    int64_t next = 0;
    for (int r = 0; r < ranks; ++r) {
      const Range e = o.experts_of(r);
      EXPECT_EQ(e.begin, next);
      for (int64_t x = e.begin; x < e.end; ++x) EXPECT_EQ(o.owner(x), r);
      next = e.end;
    }
    EXPECT_EQ(next, 8);
  }
  EXPECT_EQ(ExpertOwnership(8, 3).experts_of(2).size(), 2);  // 3, 3, 2
  EXPECT_EQ(routed_expert_of("model.layers.3.mlp.experts.12.up_proj.weight"), 12);
  EXPECT_EQ(routed_expert_of("model.layers.3.block_sparse_moe.experts.0.w2.weight_packed"), 0);
  EXPECT_EQ(routed_expert_of("model.layers.3.mlp.shared_expert.up_proj.weight"), -1);
  EXPECT_EQ(routed_expert_of("model.layers.3.mlp.gate.weight"), -1);
}

// 7 windows of 5 tokens split over the ranks, 5 experts, seeded routing (some expert-window
// pairs empty), expert 3 taking every token: each owner must hold, per expert, exactly
// the rows and window counts one rank computes from all windows.
TEST(ExpertRows, OwnerHoldsWhatOneRankWould) {
  Communicator& c = world();
  const int64_t windows = 7, S = 5, H = 3, E = 5;
  const Tensor x = seeded(windows * S, H, 11, 1.0f);
  std::mt19937 g(5);
  std::vector<std::vector<int64_t>> routed(static_cast<size_t>(E));  // over all tokens, ascending
  for (int64_t t = 0; t < windows * S; ++t)
    for (int64_t e = 0; e < E; ++e)
      if (g() % 3 == 0) routed[size_t(e)].push_back(t);
  const std::vector<bool> all = {false, false, false, true, false};
  const Range mine = split_range(windows, c.size(), c.rank());
  RoutedCapture cap{H, {}, std::vector<std::vector<int64_t>>(size_t(E))};
  Routing r;
  r.rows.resize(size_t(E));
  r.weights.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t t : routed[size_t(e)])
      if (t >= mine.begin * S && t < mine.end * S) r.rows[size_t(e)].push_back(t - mine.begin * S);
  if (mine.size() > 0) cap.add(x.rows(mine.begin * S, mine.end * S), r);
  const ExpertOwnership owners(E, c.size());
  const auto got = exchange_routed_rows(cap, owners, all, windows, S, c);
  const Range own = owners.experts_of(c.rank());
  ASSERT_EQ(int64_t(got.size()), own.size());
  for (int64_t e = own.begin; e < own.end; ++e) {
    std::vector<int64_t> tokens;
    std::vector<int64_t> per_window(size_t(windows), 0);
    for (int64_t t = 0; t < windows * S; ++t)
      if (all[size_t(e)] || std::binary_search(routed[size_t(e)].begin(), routed[size_t(e)].end(), t)) {
        tokens.push_back(t);
        ++per_window[size_t(t / S)];
      }
    const ExpertRows& er = got.at(int(e));
    EXPECT_EQ(er.window_rows, per_window) << "expert " << e;
    ASSERT_EQ(er.x.dim(0), int64_t(tokens.size())) << "expert " << e;
    for (size_t i = 0; i < tokens.size(); ++i)
      EXPECT_EQ(std::memcmp(er.x.data<float>() + i * H, x.data<float>() + tokens[i] * H, H * sizeof(float)), 0);
  }
}

// A fitted Linear survives the trip: codes (packed two to a byte when they fit), scales,
// zeros, g_idx, the report row; and one with 8-bit codes.
TEST(FittedLinear, SerializeRoundTrip) {
  std::vector<FittedLinear> in(3);
  for (int k = 0; k < 3; ++k) {
    FittedLinear& f = in[size_t(k)];
    f.module = "model.layers.1.mlp.experts." + std::to_string(k) + ".down_proj";
    f.skipped = k == 2;
    f.q.out_features = 3;
    f.q.in_features = 5;  // odd: the last packed byte holds one code
    for (int i = 0; i < 15; ++i) f.q.codes.push_back(uint8_t(k == 1 ? 200 + i : i));
    f.q.scales = {0.5f, 0.25f, 2.0f};
    f.q.zeros = k == 0 ? std::vector<float>{8, 8, 7} : std::vector<float>{};
    f.q.g_idx = {0, 0, 0, 0, 0};
    f.q.tensor_scale = 1.5f;
    f.report = {f.module, "int4 g5 sym", 0.01 * k, 0.5, 0.25, 2, 17 + k, k == 1};
  }
  const std::vector<FittedLinear> out = deserialize_fitted(serialize_fitted(in));
  ASSERT_EQ(out.size(), in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    EXPECT_EQ(out[k].module, in[k].module);
    EXPECT_EQ(out[k].skipped, in[k].skipped);
    EXPECT_EQ(out[k].q.codes, in[k].q.codes);
    EXPECT_EQ(out[k].q.scales, in[k].q.scales);
    EXPECT_EQ(out[k].q.zeros, in[k].q.zeros);
    EXPECT_EQ(out[k].q.g_idx, in[k].q.g_idx);
    EXPECT_EQ(out[k].q.tensor_scale, in[k].q.tensor_scale);
    EXPECT_EQ(out[k].report.rel_error, in[k].report.rel_error);
    EXPECT_EQ(out[k].report.routed_tokens, in[k].report.routed_tokens);
    EXPECT_EQ(out[k].report.rtn_fallback, in[k].report.rtn_fallback);
    EXPECT_EQ(out[k].report.damp_escalations, in[k].report.damp_escalations);
  }
}
