// Where the GGUF export keeps tensors until finish(): each tensor's bytes go, as its
// add_dense/add_quantized call arrives, to a spool file in OUT of the rank that owns it
// (WriteSplit; alone: this process), ".model.gguf.rN.partial" (hidden, and the export
// only counts as finished once config.json is written). Only (name, shape, type, size,
// position) stay in memory, on every rank. finish() is collective: the records are
// gathered, and the writer (rank 0, or alone) lays the file out from them: the header,
// then every tensor copied from its owner's spool (the output directory is shared by
// the ranks, as for the sharded safetensors exports). Internal to src/export.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "export/exporter.h"
#include "export/gguf_file.h"

namespace qshard::exporting {

class GgufStream {
 public:
  GgufStream(const std::string& out_dir, const std::string& file_name, const WriteSplit* split);
  ~GgufStream();  // removes this rank's spool unless finish handed it to the writer
  GgufStream(const GgufStream&) = delete;
  GgufStream& operator=(const GgufStream&) = delete;

  bool mine(const std::string& tensor) const;  // this rank spools it (always true alone)
  bool writes_file() const;                    // rank 0, or alone

  // Every rank makes the same calls in the same order (exporter.h); the owner spools.
  // A dense tensor is kept as stored (its GGUF type is known at finish, from ExportInfo);
  // a quantized one as `encode()` gives its bytes, called on the owner only.
  void add_dense(const std::string& name, const Tensor& t);
  void add_encoded(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                   const std::function<std::vector<uint8_t>()>& encode);

  struct Encoded {
    GgmlType type;
    std::vector<uint8_t> bytes;  // same shape as the tensor, rows in its own order
  };
  // This rank's dense tensors, read back one at a time and spooled as `encode` gives them.
  void encode_dense(const std::function<Encoded(const std::string& name, const Tensor& t)>& encode);

  struct Placed {
    std::string name;  // as added (HF name)
    std::vector<int64_t> shape;
    GgmlType type;
    GgufExtent where;  // order left empty
  };
  // Collective, after encode_dense. The writer gets every tensor in file order: dense ones
  // in call order, then quantized ones in call order (what the in-memory writer did);
  // other ranks get nothing and must leave their spool alone from here on.
  std::vector<Placed> gather();
  // The writer, once the file is written: every spool in OUT (and any a killed run of
  // another rank count left).
  void remove_spools() const;

 private:
  struct Record {
    uint64_t call = 0;  // index among all add_dense/add_encoded calls
    bool dense = false;
    bool encoded = false;
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type = 0;  // GgmlType once encoded, else the DType of the stored bytes
    uint64_t offset = 0, bytes = 0;
  };
  std::string out_dir_, file_name_;
  WriteSplit split_;
  bool alone_ = true;
  GgufSpool spool_;
  std::vector<Record> records_;  // this rank's tensors
  uint64_t calls_ = 0;
  bool handed_over_ = false;
};

}  // namespace qshard::exporting
