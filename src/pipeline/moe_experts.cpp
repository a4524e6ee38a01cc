#include "pipeline/moe_experts.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace qshard {

int ExpertOwnership::owner(int64_t expert) const {
  for (int r = 0; r < ranks_; ++r)
    if (expert < experts_of(r).end) return r;
  QS_ASSERT(false, "expert ", expert, " of ", experts_);
  return -1;
}

int64_t routed_expert_of(const std::string& tensor) {
  const size_t at = tensor.find(".experts.");
  if (at == std::string::npos) return -1;
  size_t p = at + 9, q = p;
  while (q < tensor.size() && tensor[q] >= '0' && tensor[q] <= '9') ++q;
  return q > p && q < tensor.size() && tensor[q] == '.' ? std::stoll(tensor.substr(p, q - p)) : -1;
}

void RoutedCapture::add(const Tensor& x_batch, const Routing& r) {
  QS_ASSERT(x_batch.dtype() == DType::F32 && x_batch.dim(1) == hidden, "RoutedCapture: x ",
            shape_str(x_batch.shape()));
  const int64_t offset = tokens();
  x.insert(x.end(), x_batch.data<float>(), x_batch.data<float>() + x_batch.numel());
  if (rows.size() < r.rows.size()) rows.resize(r.rows.size());
  for (size_t e = 0; e < r.rows.size(); ++e)
    for (int64_t t : r.rows[e]) rows[e].push_back(offset + t);
}

namespace {

// Appends / reads plain values and arrays: the few messages below, always between ranks
// of one build (same endianness and layout).
struct ByteWriter {
  std::vector<uint8_t> out;
  void raw(const void* p, size_t n) {
    if (n == 0) return;  // p may be an empty vector's null data()
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  }
  template <class T>
  void put(const T& v) { raw(&v, sizeof(T)); }
  template <class T>
  void vec(const std::vector<T>& v) {
    put(int64_t(v.size()));
    raw(v.data(), v.size() * sizeof(T));
  }
  void str(const std::string& s) {
    put(int64_t(s.size()));
    raw(s.data(), s.size());
  }
};

struct ByteReader {
  const std::vector<uint8_t>& in;
  size_t at = 0;
  void raw(void* p, size_t n) {
    if (n == 0) return;  // p may be an empty vector's null data()
    QS_ASSERT(at + n <= in.size(), "MoE message truncated at byte ", at);
    std::memcpy(p, in.data() + at, n);
    at += n;
  }
  template <class T>
  T get() {
    T v;
    raw(&v, sizeof(T));
    return v;
  }
  template <class T>
  std::vector<T> vec() {
    std::vector<T> v(size_t(get<int64_t>()));
    raw(v.data(), v.size() * sizeof(T));
    return v;
  }
  std::string str() {
    std::string s(size_t(get<int64_t>()), '\0');
    raw(s.data(), s.size());
    return s;
  }
};

// The tokens of window w (local index) that expert e reads: its routed ones, or all.
std::vector<int64_t> window_tokens_of(const RoutedCapture& cap, int64_t e, bool all, int64_t w, int64_t S) {
  std::vector<int64_t> t;
  if (all) {
    for (int64_t i = w * S; i < (w + 1) * S; ++i) t.push_back(i);
    return t;
  }
  for (int64_t i : cap.rows[size_t(e)])
    if (i >= w * S && i < (w + 1) * S) t.push_back(i);
  return t;
}

}  // namespace

// Message from a rank to an owner: for each of the owner's experts, for each of the
// sender's windows, the row count (int64); then the rows (fp32), in the same order.
std::map<int, ExpertRows> exchange_routed_rows(const RoutedCapture& cap, const ExpertOwnership& owners,
                                               const std::vector<bool>& all_tokens, int64_t windows,
                                               int64_t window_tokens, Communicator& comm) {
  const int64_t S = window_tokens, H = cap.hidden;
  const int n = comm.size();
  const int64_t my_windows = split_range(windows, n, comm.rank()).size();
  QS_ASSERT(cap.tokens() == my_windows * S, "exchange_routed_rows: ", cap.tokens(), " tokens for ", my_windows,
            " windows of ", S);
  std::vector<std::vector<uint8_t>> send(static_cast<size_t>(n));
  for (int d = 0; d < n; ++d) {
    const Range mine = owners.experts_of(d);
    std::vector<std::vector<int64_t>> tokens;  // per (expert, window)
    ByteWriter msg;
    for (int64_t e = mine.begin; e < mine.end; ++e)
      for (int64_t w = 0; w < my_windows; ++w) {
        tokens.push_back(window_tokens_of(cap, e, all_tokens[size_t(e)], w, S));
        msg.put(int64_t(tokens.back().size()));
      }
    for (const auto& ts : tokens)
      for (int64_t t : ts) msg.raw(cap.x.data() + t * H, size_t(H) * sizeof(float));
    send[size_t(d)] = std::move(msg.out);
  }
  const std::vector<std::vector<uint8_t>> got = comm.alltoallv_bytes(send, Traffic::Statistics);

  const Range mine = owners.experts_of(comm.rank());
  std::map<int, std::vector<float>> rows;
  std::map<int, ExpertRows> out;
  for (int r = 0; r < n; ++r) {  // rank order is window order
    const int64_t their_windows = split_range(windows, n, r).size();
    ByteReader in{got[size_t(r)]};
    std::vector<int64_t> counts;
    for (int64_t i = 0; i < mine.size() * their_windows; ++i) counts.push_back(in.get<int64_t>());
    size_t c = 0;
    for (int64_t e = mine.begin; e < mine.end; ++e) {
      std::vector<float>& dst = rows[int(e)];
      for (int64_t w = 0; w < their_windows; ++w, ++c) {
        out[int(e)].window_rows.push_back(counts[c]);
        const size_t at = dst.size();
        dst.resize(at + size_t(counts[c] * H));
        in.raw(dst.data() + at, size_t(counts[c] * H) * sizeof(float));
      }
    }
    QS_ASSERT(in.at == in.in.size(), "exchange_routed_rows: ", in.in.size() - in.at, " bytes left from rank ", r);
  }
  for (auto& [e, v] : rows) {
    const int64_t m = int64_t(v.size()) / H;
    Tensor x = Tensor::zeros(DType::F32, {m, H});
    if (m) std::memcpy(x.raw(), v.data(), v.size() * sizeof(float));
    out[e].x = std::move(x);
  }
  return out;
}

std::vector<uint8_t> serialize_fitted(const std::vector<FittedLinear>& fitted) {
  ByteWriter w;
  w.put(int64_t(fitted.size()));
  for (const FittedLinear& f : fitted) {
    w.str(f.module);
    w.put(uint8_t(f.skipped));
    const QuantizedLinear& q = f.q;
    w.put(q.out_features);
    w.put(q.in_features);
    // Codes of formats up to 4 bits travel two to a byte, as row_parallel.cpp's allgather.
    const bool nibbles = std::all_of(q.codes.begin(), q.codes.end(), [](uint8_t c) { return c < 16; });
    w.put(uint8_t(nibbles));
    w.put(int64_t(q.codes.size()));
    if (nibbles) {
      std::vector<uint8_t> packed((q.codes.size() + 1) / 2, 0);
      for (size_t i = 0; i < q.codes.size(); ++i) packed[i / 2] |= uint8_t(q.codes[i] << (4 * (i % 2)));
      w.raw(packed.data(), packed.size());
    } else {
      w.raw(q.codes.data(), q.codes.size());
    }
    w.vec(q.scales);
    w.vec(q.zeros);
    w.vec(q.g_idx);
    w.put(q.tensor_scale);
    w.vec(q.super_scales);
    const ModuleReport& m = f.report;
    w.str(m.format);
    w.put(m.rel_error);
    w.put(m.gptq_loss);
    w.put(m.seconds);
    w.put(int64_t(m.damp_escalations));
    w.put(m.routed_tokens);
    w.put(uint8_t(m.rtn_fallback));
  }
  return w.out;
}

std::vector<FittedLinear> deserialize_fitted(const std::vector<uint8_t>& bytes) {
  ByteReader r{bytes};
  std::vector<FittedLinear> out(size_t(r.get<int64_t>()));
  for (FittedLinear& f : out) {
    f.module = r.str();
    f.skipped = r.get<uint8_t>() != 0;
    QuantizedLinear& q = f.q;
    q.out_features = r.get<int64_t>();
    q.in_features = r.get<int64_t>();
    const bool nibbles = r.get<uint8_t>() != 0;
    q.codes.resize(size_t(r.get<int64_t>()));
    if (nibbles) {
      std::vector<uint8_t> packed((q.codes.size() + 1) / 2);
      r.raw(packed.data(), packed.size());
      for (size_t i = 0; i < q.codes.size(); ++i) q.codes[i] = uint8_t((packed[i / 2] >> (4 * (i % 2))) & 15);
    } else {
      r.raw(q.codes.data(), q.codes.size());
    }
    q.scales = r.vec<float>();
    q.zeros = r.vec<float>();
    q.g_idx = r.vec<int32_t>();
    q.tensor_scale = r.get<float>();
    q.super_scales = r.vec<float>();
    ModuleReport& m = f.report;
    m.module = f.module;
    m.format = r.str();
    m.rel_error = r.get<double>();
    m.gptq_loss = r.get<double>();
    m.seconds = r.get<double>();
    m.damp_escalations = int(r.get<int64_t>());
    m.routed_tokens = r.get<int64_t>();
    m.rtn_fallback = r.get<uint8_t>() != 0;
  }
  QS_ASSERT(r.at == bytes.size(), "deserialize_fitted: ", bytes.size() - r.at, " bytes left");
  return out;
}

}  // namespace qshard
