// The safetensors side of a WriteSplit: what the three safetensors exporters write
// through instead of a bare SafetensorsWriter. Alone (no split, or one rank) it is
// exactly a SafetensorsWriter; split, each rank writes only the tensors it owns into
// its own shards, and finish is collective: the parts are gathered, and rank 0 numbers
// them in rank order, renames them and writes the index inside its commit step.
// Internal to src/export.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "export/exporter.h"
#include "io/safetensors.h"

namespace qshard::exporting {

class ShardedOutput {
 public:
  ShardedOutput(const std::string& out_dir, uint64_t max_shard_bytes, const WriteSplit* split);

  // This rank writes the tensor (always true alone).
  bool mine(const std::string& tensor) const;
  // Writes the tensor if mine(name); otherwise nothing (the data is never touched).
  void add(const std::string& name, const Tensor& t);
  // Collective when split. Rank 0 (or the lone writer) gets the commit step to run
  // inside finish_output; other ranks get an empty function and must not finish the
  // directory.
  std::function<void()> close();
  bool finishes_directory() const;  // rank 0, or alone

 private:
  std::string out_dir_;
  WriteSplit split_;
  bool alone_ = true;
  SafetensorsWriter writer_;
};

}  // namespace qshard::exporting
