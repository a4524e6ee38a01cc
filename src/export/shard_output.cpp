#include "export/shard_output.h"

#include <cstring>

#include "core/error.h"
#include "dist/communicator.h"
#include "export/gather_bytes.h"

namespace qshard::exporting {

namespace {

// A rank's parts as bytes for the gather: [u64 count] then per part
// [u64 bytes][str tmp path][u64 n][str name]... (gather_bytes.h)
std::vector<uint8_t> encode(const std::vector<SafetensorsWriter::Part>& parts) {
  std::vector<uint8_t> b;
  put_u64(b, parts.size());
  for (const auto& p : parts) {
    put_u64(b, p.bytes);
    put_str(b, p.tmp_path);
    put_u64(b, p.names.size());
    for (const auto& n : p.names) put_str(b, n);
  }
  return b;
}

void decode(const std::vector<uint8_t>& b, std::vector<SafetensorsWriter::Part>& out) {
  GatherReader r{b, "shard list"};
  const uint64_t n = r.u64();
  for (uint64_t i = 0; i < n; ++i) {
    SafetensorsWriter::Part p;
    p.bytes = r.u64();
    p.tmp_path = r.str();
    const uint64_t k = r.u64();
    for (uint64_t j = 0; j < k; ++j) p.names.push_back(r.str());
    out.push_back(std::move(p));
  }
}

bool is_alone(const WriteSplit* split) { return !split || !split->comm || split->comm->size() == 1; }

}  // namespace

ShardedOutput::ShardedOutput(const std::string& out_dir, uint64_t max_shard_bytes, const WriteSplit* split)
    : out_dir_(out_dir),
      split_(split ? *split : WriteSplit{}),
      alone_(is_alone(split)),
      writer_(out_dir, "model", max_shard_bytes, {{"format", "pt"}},
              alone_ ? std::string() : "r" + std::to_string(split->comm->rank())) {
  QS_ASSERT(alone_ || split_.owner, "a WriteSplit needs an owner function");
}

bool ShardedOutput::mine(const std::string& tensor) const {
  if (alone_) return true;
  const int owner = split_.owner(tensor);
  QS_ASSERT(owner >= 0 && owner < split_.comm->size(), "owner ", owner, " of ", tensor);
  return owner == split_.comm->rank();
}

void ShardedOutput::add(const std::string& name, const Tensor& t) {
  if (mine(name)) writer_.add(name, t);
}

bool ShardedOutput::finishes_directory() const { return alone_ || split_.comm->is_root(); }

std::function<void()> ShardedOutput::close() {
  if (alone_) return [this] { writer_.finish(); };
  Communicator& comm = *split_.comm;
  const auto all = comm.allgather_bytes(encode(writer_.close_parts()), Traffic::Control);
  if (!comm.is_root()) return {};
  std::vector<SafetensorsWriter::Part> parts;
  for (const auto& b : all) decode(b, parts);  // rank order: rank 0's layers come first
  const std::string out_dir = out_dir_;
  return [out_dir, parts] { SafetensorsWriter::commit_shards(out_dir, "model", parts); };
}

}  // namespace qshard::exporting
