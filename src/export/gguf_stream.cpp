#include "export/gguf_stream.h"

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "dist/communicator.h"
#include "export/gather_bytes.h"

namespace qshard::exporting {

namespace {

bool is_alone(const WriteSplit* split) { return !split || !split->comm || split->comm->size() == 1; }

std::string spool_name(const std::string& file_name, int rank) {
  return "." + file_name + ".r" + std::to_string(rank) + ".partial";
}

}  // namespace

GgufStream::GgufStream(const std::string& out_dir, const std::string& file_name, const WriteSplit* split)
    : out_dir_(out_dir),
      file_name_(file_name),
      split_(split ? *split : WriteSplit{}),
      alone_(is_alone(split)),
      spool_(out_dir + "/" + spool_name(file_name, alone_ ? 0 : split->comm->rank())) {
  QS_ASSERT(alone_ || split_.owner, "a WriteSplit needs an owner function");
}

GgufStream::~GgufStream() {
  if (!handed_over_) spool_.remove();
}

bool GgufStream::mine(const std::string& tensor) const {
  if (alone_) return true;
  const int owner = split_.owner(tensor);
  QS_ASSERT(owner >= 0 && owner < split_.comm->size(), "owner ", owner, " of ", tensor);
  return owner == split_.comm->rank();
}

bool GgufStream::writes_file() const { return alone_ || split_.comm->is_root(); }

void GgufStream::add_dense(const std::string& name, const Tensor& t) {
  const uint64_t call = calls_++;
  if (!mine(name)) return;
  QS_ASSERT(t.device() == Device::Host, "GGUF export: ", name, " is not in host memory");
  const uint64_t offset = spool_.append(t.raw(), t.nbytes());
  records_.push_back({call, true, false, name, std::vector<int64_t>(t.shape().begin(), t.shape().end()),
                      uint32_t(t.dtype()), offset, t.nbytes()});
}

void GgufStream::add_encoded(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                             const std::function<std::vector<uint8_t>()>& encode) {
  const uint64_t call = calls_++;
  if (!mine(name)) return;
  const std::vector<uint8_t> bytes = encode();
  const uint64_t offset = spool_.append(bytes.data(), bytes.size());
  records_.push_back({call, false, true, name, shape, uint32_t(type), offset, bytes.size()});
}

void GgufStream::encode_dense(const std::function<Encoded(const std::string&, const Tensor&)>& encode) {
  for (Record& r : records_) {
    if (r.encoded) continue;
    Tensor t = Tensor::zeros(DType(r.type), Shape(r.shape.begin(), r.shape.end()));
    QS_ASSERT(t.nbytes() == r.bytes, "spooled ", r.name, ": ", r.bytes, " bytes");
    spool_.read(r.offset, t.raw(), r.bytes);
    const Encoded e = encode(r.name, t);
    t = Tensor();
    // The raw bytes stay behind in the spool, unused: disk, not memory.
    r.offset = spool_.append(e.bytes.data(), e.bytes.size());
    r.bytes = e.bytes.size();
    r.type = uint32_t(e.type);
    r.encoded = true;
  }
}

std::vector<GgufStream::Placed> GgufStream::gather() {
  spool_.close();
  // This rank's records for the gather: [u64 count], then per record [u64 call][u64 dense]
  // [str name][u64 ndim][u64 dim]...[u64 type][u64 offset][u64 bytes] (gather_bytes.h).
  std::vector<uint8_t> mine;
  put_u64(mine, records_.size());
  for (const Record& r : records_) {
    QS_ASSERT(r.encoded, "GGUF export: ", r.name, " gathered before encode_dense");
    put_u64(mine, r.call), put_u64(mine, r.dense ? 1 : 0), put_str(mine, r.name);
    put_u64(mine, r.shape.size());
    for (const int64_t d : r.shape) put_u64(mine, uint64_t(d));
    put_u64(mine, r.type), put_u64(mine, r.offset), put_u64(mine, r.bytes);
  }
  const std::vector<std::vector<uint8_t>> all =
      alone_ ? std::vector<std::vector<uint8_t>>{mine} : split_.comm->allgather_bytes(mine, Traffic::Control);
  handed_over_ = true;  // the writer removes every spool once the file is written
  if (!writes_file()) return {};

  // Slot per call: dense calls first, each kind in call order.
  std::vector<Placed> slot(static_cast<size_t>(calls_));
  std::vector<int> dense(static_cast<size_t>(calls_), -1);  // -1: no rank spooled the call
  for (size_t rank = 0; rank < all.size(); ++rank) {
    GatherReader in{all[rank], "GGUF tensor list"};
    for (uint64_t n = in.u64(); n > 0; --n) {
      const uint64_t call = in.u64();
      QS_ASSERT(call < calls_ && dense[size_t(call)] < 0, "GGUF export: call ", call, " spooled twice or unknown");
      dense[size_t(call)] = int(in.u64());
      Placed& p = slot[size_t(call)];
      p.name = in.str();
      p.shape.resize(size_t(in.u64()));
      for (int64_t& d : p.shape) d = int64_t(in.u64());
      p.type = GgmlType(uint32_t(in.u64()));
      p.where.path = out_dir_ + "/" + spool_name(file_name_, int(rank));
      p.where.offset = in.u64();
      const uint64_t want = ggml_tensor_bytes(p.type, p.shape);
      const uint64_t bytes = in.u64();
      QS_ASSERT(bytes == want, "GGUF export: ", p.name, " spooled as ", bytes, " bytes, its type and shape make ", want);
    }
  }
  std::vector<Placed> out;
  out.reserve(slot.size());
  for (const int want : {1, 0})
    for (size_t c = 0; c < slot.size(); ++c) {
      QS_ASSERT(dense[c] >= 0, "GGUF export: no rank spooled call ", c);
      if (dense[c] == want) out.push_back(std::move(slot[c]));
    }
  return out;
}

void GgufStream::remove_spools() const {
  namespace fs = std::filesystem;
  const std::string prefix = "." + file_name_ + ".r";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir_, ec)) {
    const std::string f = e.path().filename().string();
    if (f.starts_with(prefix) && f.ends_with(".partial")) ::unlink(e.path().c_str());
  }
}

}  // namespace qshard::exporting
