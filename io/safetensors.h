// Safetensors checkpoints: reading (mmap'd, zero-copy) and writing (streamed, sharded).
// Format: 8-byte little-endian header length N, N bytes of JSON, then the data region.
// See https://github.com/huggingface/safetensors. Model files are untrusted input, so
// the reader validates the whole header before handing out a single pointer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace qshard {

// One .safetensors file, mapped read-only. Copies share the mapping; Tensors returned by
// get() hold it too, so they stay valid after every SafetensorsFile object is gone.
class SafetensorsFile {
 public:
  struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets in the data region, as in the header
  };

  // Throws InputError naming the file and what is wrong with it.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // in order of their data offsets
  bool contains(const std::string& name) const { return by_name_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // InputError if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A view into the mapping (Device::Host). The mapping is PROT_READ: never write
  // through it (it faults); copy first. The format does not align data, so when the
  // bytes are not aligned to the element size this returns an aligned heap copy
  // instead, which keeps typed loads (convert_to_f32, kernels) well-defined.
  // If the file is truncated by someone else while mapped, reads fault (SIGBUS).
  Tensor get(const std::string& name) const;
  // Drops the tensor's whole pages from the resident set (madvise DONTNEED: the mapping
  // is private and never written, so a later read faults them in from the file again).
  // Streaming a checkpoint then keeps the RSS at what is in use, not what was read.
  void release(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  const uint8_t* data_ = nullptr;  // start of the data region inside the mapping
  std::vector<TensorInfo> tensors_;  // sorted by data offset
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a checkpoint directory: model.safetensors, or the shards that
// model.safetensors.index.json names. Everything stays mmap'd; nothing is copied.
class TensorStore : public TensorSource {
 public:
  using TensorInfo = SafetensorsFile::TensorInfo;

  // A directory (index.json preferred, else model.safetensors) or a .safetensors file.
  static TensorStore open(const std::string& dir);
  static TensorStore open_file(const std::string& path);

  bool contains(const std::string& name) const override;
  Tensor get(const std::string& name) const override;  // InputError if absent
  std::vector<std::string> names() const override;     // by shard, then by offset
  void release(const std::string& name) const override;
  const TensorInfo& info(const std::string& name) const;
  Shape shape(const std::string& name) const { return info(name).shape; }
  const std::string& location() const { return location_; }  // what open() was given

 private:
  const SafetensorsFile& shard_of(const std::string& name) const;
  std::string location_;
  std::vector<SafetensorsFile> shards_;
  std::unordered_map<std::string, size_t> shard_index_;  // tensor -> shards_ index
  std::vector<std::string> names_;
};

// Writes tensors as safetensors shards in the layout Hugging Face tools expect:
// one shard -> <basename>.safetensors; several -> <basename>-00001-of-00003.safetensors
// ... plus <basename>.safetensors.index.json. Tensor data is streamed to disk in add(),
// so memory holds one tensor at a time. Nothing gets a final name until finish() has
// written and fsync'd every shard; a writer destroyed before that removes its
// temporaries, so a failed run never leaves a plausible-looking partial checkpoint.
class SafetensorsWriter {
 public:
  // temp_tag keeps the temporaries of several writers of one directory apart ("r3").
  explicit SafetensorsWriter(std::string out_dir, std::string basename = "model",
                             uint64_t max_shard_bytes = 5ull << 30,
                             std::map<std::string, std::string> metadata = {{"format", "pt"}},
                             std::string temp_tag = "");
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Any dtype, host memory. After an exception from add() or finish() the writer is
  // unusable (further calls throw); destroy it to remove its temporaries. A new shard starts when this tensor would push the current
  // one past max_shard_bytes (a tensor larger than that gets a shard of its own).
  void add(const std::string& name, const Tensor& t);

  // Returns the paths of the shard files written. Also removes this basename's outputs
  // of an earlier run that this one does not overwrite (a stale index.json or extra
  // shards would otherwise be read together with the new files).
  std::vector<std::string> finish();

  // For a checkpoint written by several processes: each closes its shards under their
  // temporary names (complete and fsync'd, nothing renamed; possibly none), and one of
  // them commits every process's parts in order with commit_shards. The writer no
  // longer owns the returned temporaries (a failed run may leave them, hidden).
  struct Part {
    std::string tmp_path;
    uint64_t bytes = 0;                // tensor data bytes (the index's total_size)
    std::vector<std::string> names;
  };
  std::vector<Part> close_parts();
  // Renames parts (in checkpoint order) to <basename>.safetensors or the numbered shard
  // names, writes the index when there are several, removes stale outputs, as finish().
  static std::vector<std::string> commit_shards(const std::string& out_dir, const std::string& basename,
                                                const std::vector<Part>& parts);

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  struct Shard {
    std::vector<Entry> entries;
    uint64_t bytes = 0;
    std::string data_tmp;   // tensor bytes as added
    std::string shard_tmp;  // header + data, renamed to the final name by finish()
  };
  void open_shard();
  void close_shard();
  void remove_temporaries() noexcept;

  std::string out_dir_, basename_, temp_tag_;
  uint64_t max_shard_bytes_;
  std::map<std::string, std::string> metadata_;
  std::vector<Shard> shards_;
  int data_fd_ = -1;  // the open shard's data_tmp
  std::set<std::string> names_;
  bool finished_ = false;
  bool broken_ = false;  // an add/finish threw midway: the writer must not go on
};

}  // namespace qshard
