// Which rank reads and writes each decoder layer, and the weights' one trip over the
// network: the owner of layer L reads its tensors from disk (on a background thread,
// one layer ahead) and broadcasts them; the other ranks never touch that layer's part
// of the checkpoint. Layers are owned in contiguous ranges (rank 0 the first ones), so
// each rank's output shards hold a layer range and come out in checkpoint order.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/partition.h"

namespace qshard {

class LayerOwnership {
 public:
  LayerOwnership(int64_t num_layers, int ranks);
  int owner(int64_t layer) const;
  Range layers_of(int rank) const { return split_range(num_layers_, ranks_, rank); }
  // The rank that writes a checkpoint tensor: its layer's owner for
  // "<anything>.layers.<L>.<rest>"; the owner of layer 0 for the embedding; the owner
  // of the last layer for everything after the layers (final norm, lm_head).
  int owner_of_tensor(const std::string& name) const;

 private:
  int64_t num_layers_;
  int ranks_;
};

// One layer's tensors as stored in the checkpoint (original dtypes), held in one buffer.
class LayerTensors final : public TensorSource {
 public:
  bool contains(const std::string& name) const override { return tensors_.count(name) != 0; }
  Tensor get(const std::string& name) const override;
  std::vector<std::string> names() const override;
  uint64_t bytes() const { return bytes_; }
  // Seconds the owner spent copying the layer out of the checkpoint (on the reader
  // thread, so mostly overlapped with the previous layer); 0 on the other ranks.
  double read_seconds() const { return read_seconds_; }

 private:
  friend class LayerFetcher;
  std::map<std::string, Tensor> tensors_;
  uint64_t bytes_ = 0;
  double read_seconds_ = 0;
};

class LayerFetcher {
 public:
  // layer_prefixes[L] names layer L's tensors ("model.layers.L.").
  LayerFetcher(const TensorSource& source, std::vector<std::string> layer_prefixes,
               const LayerOwnership& owners, Communicator& comm);
  ~LayerFetcher();
  LayerFetcher(const LayerFetcher&) = delete;
  LayerFetcher& operator=(const LayerFetcher&) = delete;

  // Collective: every rank gets layer L's tensors; the owner reads them (or takes the
  // prefetched copy) and broadcasts (Traffic::Weights).
  std::shared_ptr<const LayerTensors> fetch(int64_t layer);
  // Starts reading layer L on its owner in the background; nothing elsewhere.
  void prefetch(int64_t layer);
  // Tensors `reader` names a rank for (>= 0) are not broadcast: that rank alone reads
  // them, in fetch(), and the others' LayerTensors lack them (an MoE layer's routed
  // experts, read by their owners: pipeline/moe_experts.h).
  void read_privately(std::function<int(const std::string&)> reader) { private_reader_ = std::move(reader); }

 private:
  // A layer as it travels: a small description (names, dtypes, shapes, offsets) and
  // the tensors' bytes back to back, each 64-byte aligned.
  struct Packed {
    std::vector<uint8_t> meta;
    std::shared_ptr<uint8_t[]> data;
    int64_t data_bytes = 0;
    double read_seconds = 0;
  };
  Packed read(int64_t layer) const;

  const TensorSource& source_;
  std::vector<std::string> prefixes_;
  const LayerOwnership& owners_;
  Communicator& comm_;
  int64_t pending_layer_ = -1;
  std::future<Packed> pending_;
  std::function<int(const std::string&)> private_reader_;
};

}  // namespace qshard
