#include "pipeline/layer_owner.h"

#include "core/log.h"
#include "core/phase_timer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "core/phase_timer.h"

namespace qshard {

LayerOwnership::LayerOwnership(int64_t num_layers, int ranks) : num_layers_(num_layers), ranks_(ranks) {
  QS_ASSERT(num_layers > 0 && ranks > 0, "ownership of ", num_layers, " layers over ", ranks, " ranks");
}

int LayerOwnership::owner(int64_t layer) const {
  QS_ASSERT(layer >= 0 && layer < num_layers_, "layer ", layer);
  for (int r = 0; r < ranks_; ++r) {
    const Range mine = layers_of(r);
    if (layer >= mine.begin && layer < mine.end) return r;
  }
  QS_ASSERT(false, "no owner for layer ", layer);
}

int LayerOwnership::owner_of_tensor(const std::string& name) const {
  const size_t at = name.find(".layers.");
  if (at != std::string::npos) {
    size_t p = at + 8, q = p;
    while (q < name.size() && name[q] >= '0' && name[q] <= '9') ++q;
    if (q > p && q < name.size() && name[q] == '.') {
      const int64_t layer = std::stoll(name.substr(p, q - p));
      if (layer < num_layers_) return owner(layer);
    }
  }
  if (name.find("embed_tokens") != std::string::npos) return owner(0);
  return owner(num_layers_ - 1);
}

Tensor LayerTensors::get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail_input("tensor ", name, " is not among the layer's tensors");
  return it->second;
}

std::vector<std::string> LayerTensors::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : tensors_) out.push_back(n);
  return out;
}

namespace {

constexpr int64_t kAlign = 64;

void put(std::vector<uint8_t>& b, const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
}

template <class T>
T take(const std::vector<uint8_t>& b, size_t& pos) {
  QS_ASSERT(pos + sizeof(T) <= b.size(), "truncated layer description");
  T v;
  std::memcpy(&v, b.data() + pos, sizeof(T));
  pos += sizeof(T);
  return v;
}

}  // namespace

LayerFetcher::LayerFetcher(const TensorSource& source, std::vector<std::string> layer_prefixes,
                           const LayerOwnership& owners, Communicator& comm)
    : source_(source), prefixes_(std::move(layer_prefixes)), owners_(owners), comm_(comm) {}

LayerFetcher::~LayerFetcher() {
  if (pending_.valid()) pending_.wait();  // never leave the reader thread running
}

LayerFetcher::Packed LayerFetcher::read(int64_t layer) const {
  const std::string& prefix = prefixes_.at(size_t(layer));
  std::vector<std::string> names;
  for (const auto& n : source_.names())
    if (n.compare(0, prefix.size(), prefix) == 0 && !(private_reader_ && private_reader_(n) >= 0)) names.push_back(n);
  std::sort(names.begin(), names.end());
  if (names.empty()) fail_input("no tensors named ", prefix, "* in the checkpoint");
  std::vector<Tensor> ts;
  Packed p;
  int64_t off = 0;
  for (const auto& n : names) {
    Tensor t = source_.get(n);
    const uint32_t len = uint32_t(n.size());
    const uint8_t dtype = uint8_t(t.dtype()), nd = uint8_t(t.ndim());
    put(p.meta, &len, 4);
    put(p.meta, n.data(), n.size());
    put(p.meta, &dtype, 1);
    put(p.meta, &nd, 1);
    for (int d = 0; d < t.ndim(); ++d) {
      const int64_t x = t.dim(d);
      put(p.meta, &x, 8);
    }
    put(p.meta, &off, 8);
    off += (int64_t(t.nbytes()) + kAlign - 1) / kAlign * kAlign;
    ts.push_back(std::move(t));
  }
  p.data_bytes = off;
  p.data = std::shared_ptr<uint8_t[]>(new (std::align_val_t(kAlign)) uint8_t[size_t(std::max<int64_t>(off, 1))],
                                      [](uint8_t* q) { ::operator delete[](q, std::align_val_t(kAlign)); });
  // The copy is where the disk is read (the source is mmap'd).
  const double t0 = wall_seconds();
  off = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    if (t.nbytes()) std::memcpy(p.data.get() + off, t.raw(), t.nbytes());
    off += (int64_t(t.nbytes()) + kAlign - 1) / kAlign * kAlign;
    source_.release(names[i]);  // copied: its file pages need not stay resident
  }
  p.read_seconds = wall_seconds() - t0;
  return p;
}

void LayerFetcher::prefetch(int64_t layer) {
  if (layer < 0 || layer >= int64_t(prefixes_.size())) return;
  if (owners_.owner(layer) != comm_.rank() || pending_layer_ == layer) return;
  if (pending_.valid()) pending_.wait();
  pending_layer_ = layer;
  // The thread only reads files: every MPI call stays on the main thread.
  pending_ = std::async(std::launch::async, [this, layer] { return read(layer); });
}

std::shared_ptr<const LayerTensors> LayerFetcher::fetch(int64_t layer) {
  const int owner = owners_.owner(layer);
  Packed p;
  if (owner == comm_.rank()) {
    PhaseTimer timer(Phase::Read);  // what the read still costs after the prefetch
    if (pending_layer_ == layer && pending_.valid()) {
      p = pending_.get();  // rethrows a read error here, on the main thread
      pending_layer_ = -1;
    } else {
      p = read(layer);
    }
  }
  PhaseTimer timer(Phase::Broadcast);
  int64_t sizes[2] = {int64_t(p.meta.size()), p.data_bytes};
  comm_.broadcast(sizes, sizeof sizes, owner, Traffic::Control);
  if (owner != comm_.rank()) {
    p.meta.resize(size_t(sizes[0]));
    p.data_bytes = sizes[1];
    p.data = std::shared_ptr<uint8_t[]>(new (std::align_val_t(kAlign)) uint8_t[size_t(std::max<int64_t>(sizes[1], 1))],
                                        [](uint8_t* q) { ::operator delete[](q, std::align_val_t(kAlign)); });
  }
  comm_.broadcast(p.meta.data(), sizes[0], owner, Traffic::Control);
  comm_.broadcast(p.data.get(), sizes[1], owner, Traffic::Weights);

  auto out = std::make_shared<LayerTensors>();
  out->bytes_ = uint64_t(p.data_bytes);
  out->read_seconds_ = p.read_seconds;
  std::shared_ptr<void> keep = p.data;
  size_t pos = 0;
  while (pos < p.meta.size()) {
    const uint32_t len = take<uint32_t>(p.meta, pos);
    QS_ASSERT(pos + len <= p.meta.size(), "truncated layer description");
    std::string name(reinterpret_cast<const char*>(p.meta.data() + pos), len);
    pos += len;
    const DType dtype = DType(take<uint8_t>(p.meta, pos));
    const int nd = take<uint8_t>(p.meta, pos);
    Shape shape;
    for (int d = 0; d < nd; ++d) shape.push_back(take<int64_t>(p.meta, pos));
    const int64_t off = take<int64_t>(p.meta, pos);
    QS_ASSERT(off >= 0 && off + int64_t(shape_numel(shape) * int64_t(dtype_size(dtype))) <= p.data_bytes,
              "tensor ", name, " outside the layer buffer");
    out->tensors_[name] = Tensor::view(dtype, shape, p.data.get() + off, keep);
  }
  if (private_reader_) {  // this rank's own tensors of the layer, as stored (mapped)
    PhaseTimer read_timer(Phase::Read);
    const std::string& prefix = prefixes_.at(size_t(layer));
    for (const auto& n : source_.names())
      if (n.compare(0, prefix.size(), prefix) == 0 && private_reader_(n) == comm_.rank()) {
        out->tensors_[n] = source_.get(n);
        out->bytes_ += uint64_t(out->tensors_[n].nbytes());
      }
  }
  return out;
}

}  // namespace qshard
