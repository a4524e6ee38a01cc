// qshard's own HDF5 layout (docs/formats-hdf5.md): one file model.h5 with a group per
// quantized module holding its codes, scales, zero points, g_idx and tensor scale as
// QuantizedLinear has them, and every dense tensor under /dense. Written to a temporary
// name and renamed by finish(); config.json (with quantization_config.quant_method
// "qshard-hdf5") is written after it.
//
// Under a WriteSplit the file is one, written collectively with parallel HDF5: every rank
// creates every group, dataset and attribute (they are all the same on every rank), and
// the owner of each tensor writes its bytes while the others select nothing.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "dist/hdf5_mpio.h"
#include "export/export_common.h"
#include "io/hdf5_file.h"

namespace qshard::exporting {

namespace {

constexpr const char* kFileName = "model.h5";
constexpr int64_t kLayoutVersion = 1;

const char* family_name(FormatFamily f) {
  switch (f) {
    case FormatFamily::Int: return "int";
    case FormatFamily::MXInt: return "mxint";
    case FormatFamily::MXFP4: return "mxfp4";
    case FormatFamily::NVFP4: return "nvfp4";
    case FormatFamily::GgmlBlock: return "ggml";
    case FormatFamily::GgmlK: return "ggml_k";
    case FormatFamily::GgmlIQ4NL: return "ggml_iq4_nl";
    case FormatFamily::GgmlIQ4XS: return "ggml_iq4_xs";
  }
  return "?";
}

// How a dense tensor of each dtype is stored: numbers HDF5 knows natively as themselves,
// 16-bit floats (and I16) as their raw u16 bits, 8-bit types as raw u8.
H5Type storage_type(DType d) {
  switch (d) {
    case DType::F32: return H5Type::F32;
    case DType::F64: return H5Type::F64;
    case DType::I64: return H5Type::I64;
    case DType::I32: return H5Type::I32;
    case DType::BF16:
    case DType::F16:
    case DType::I16: return H5Type::U16;
    case DType::U8:
    case DType::I8:
    case DType::BOOL:
    case DType::F8_E4M3: return H5Type::U8;
  }
  return H5Type::U8;
}

class Hdf5Exporter final : public Exporter {
 public:
  Hdf5Exporter(const std::string& out_dir, ActFormat act, const WriteSplit* split)
      : out_dir_(out_dir),
        split_(split && split->comm && split->comm->size() > 1 ? *split : WriteSplit{}),
        tmp_((std::filesystem::path(out_dir) / (std::string(".") + kFileName + ".tmp")).string()),
        final_((std::filesystem::path(out_dir) / kFileName).string()),
        act_(act) {
    std::error_code ec;
    std::filesystem::create_directories(out_dir_, ec);
    if (ec)
      fail_input("cannot create output directory ", out_dir_, ": ", ec.message(),
                 ": choose a directory you can write to");
    file_ = H5File::create(tmp_, split_.comm ? mpio_access(*split_.comm) : nullptr);
    root_ = file_.root();
  }

  ~Hdf5Exporter() override {
    if (finished_) return;
    dense_ = H5Group();
    root_ = H5Group();
    file_ = H5File();  // closes quietly
    ::unlink(tmp_.c_str());
  }

  void add_dense(const std::string& name, const Tensor& t) override {
    QS_ASSERT(!finished_ && !broken_, "add_dense after finish or a failed add");
    QS_ASSERT(t.device() == Device::Host, "tensor '", name, "' must be on the host");
    broken_ = true;
    if (!dense_created_) {
      dense_ = root_.create_group("dense");
      dense_created_ = true;
    }
    if (dense_.has(name)) fail("tensor '", name, "' was added twice to ", final_);
    dense_.write_dataset(name, storage_type(t.dtype()), t.shape(), mine(name) ? t.raw() : nullptr);
    dense_.set_attr("dtype", std::string(dtype_name(t.dtype())), name);
    broken_ = false;
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    QS_ASSERT(!finished_ && !broken_, "add_quantized after finish or a failed add");
    const bool own = mine(module + ".weight");
    if (own) validate_quantized(module, q);
    if (module == "dense") fail("module name 'dense' collides with the /dense group of ", final_);
    if (root_.has(module)) fail("module '", module, "' was added twice to ", final_);
    broken_ = true;
    const int64_t out = q.out_features, in = q.in_features, ng = q.n_groups();
    H5Group g = root_.create_group(module);
    auto data = [own](const void* p) { return own ? p : nullptr; };
    g.write_dataset("codes", H5Type::U8, {out, in}, data(q.codes.data()));
    g.write_dataset("scales", H5Type::F32, {out, ng}, data(q.scales.data()));
    if ((q.format.family == FormatFamily::Int && !q.format.symmetric) ||
        (q.format.is_ggml() && q.format.stores_zeros()))
      g.write_dataset("zeros", H5Type::F32, {out, ng}, data(q.zeros.data()));
    const std::vector<int32_t> gi = g_idx_or_default(q);
    g.write_dataset("g_idx", H5Type::I32, {in}, data(gi.data()));
    g.write_dataset("tensor_scale", H5Type::F32, {}, data(&q.tensor_scale));
    g.set_attr("kind", "quantized_linear");
    g.set_attr("format", q.format.name());
    g.set_attr("family", family_name(q.format.family));
    g.set_attr("bits", int64_t(q.format.bits));
    g.set_attr("group_size", int64_t(q.format.group_size));
    g.set_attr("symmetric", int64_t(q.format.symmetric ? 1 : 0));
    g.set_attr("out_features", out);
    g.set_attr("in_features", in);
    ++modules_;
    broken_ = false;
  }

  void finish(const ExportInfo& info) override {
    QS_ASSERT(!finished_ && !broken_, "finish called twice or after a failed add");
    broken_ = true;
    read_source_config(info.source_model_dir);  // refuse before anything is renamed
    const QuantFormat& f = info.format;
    root_.set_attr("layout", "qshard-hdf5");
    root_.set_attr("layout_version", kLayoutVersion);
    root_.set_attr("producer", qshard_producer());
    root_.set_attr("method", info.method);
    root_.set_attr("format", f.name());
    root_.set_attr("format_description", f.describe());
    root_.set_attr("family", family_name(f.family));
    root_.set_attr("bits", int64_t(f.bits));
    root_.set_attr("group_size", int64_t(f.group_size));
    root_.set_attr("symmetric", int64_t(f.symmetric ? 1 : 0));
    root_.set_attr("act_order", int64_t(info.act_order ? 1 : 0));
    root_.set_attr("static_groups", int64_t(info.static_groups ? 1 : 0));
    root_.set_attr("damp", info.damp);
    root_.set_attr("true_sequential", int64_t(info.true_sequential ? 1 : 0));
    root_.set_attr("ignored_modules", nlohmann::json(info.ignored_modules).dump());
    root_.set_attr("quantized_modules", modules_);
    root_.set_attr("act_format", act_format_name(act_));
    dense_ = H5Group();
    root_ = H5Group();
    file_.close();  // collective under a WriteSplit
    if (split_.comm && !split_.comm->is_root()) {
      finished_ = true;  // rank 0 renames the file and finishes the directory
      return;
    }

    nlohmann::json qc;
    qc["quant_method"] = "qshard-hdf5";
    qc["file"] = kFileName;
    qc["layout_version"] = kLayoutVersion;
    qc["format"] = f.name();
    qc["family"] = family_name(f.family);
    qc["bits"] = f.bits;
    qc["group_size"] = f.group_size;
    qc["symmetric"] = f.symmetric;
    qc["method"] = info.method;
    qc["act_order"] = info.act_order;
    qc["ignore"] = info.ignored_modules;
    qc["act_format"] = act_format_name(act_);  // inputs of the quantized Linears
    finish_output(out_dir_, info, [this] {
      const int fd = ::open(tmp_.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || ::fsync(fd) != 0) {
        const int err = errno;
        if (fd >= 0) ::close(fd);
        fail_input("syncing ", tmp_, " failed: ", std::strerror(err));
      }
      ::close(fd);
      if (::rename(tmp_.c_str(), final_.c_str()) != 0)
        fail_input("renaming ", tmp_, " to ", final_, " failed: ", std::strerror(errno));
    }, qc);
    finished_ = true;
  }

 private:
  bool mine(const std::string& tensor) const {
    return !split_.comm || split_.owner(tensor) == split_.comm->rank();
  }

  std::string out_dir_;
  WriteSplit split_;
  std::string tmp_, final_;
  H5File file_;
  H5Group root_, dense_;
  bool dense_created_ = false;
  int64_t modules_ = 0;
  ActFormat act_ = ActFormat::None;
  bool finished_ = false;
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<Exporter> make_hdf5_exporter(const std::string& out_dir, ActFormat act,
                                             const WriteSplit* split) {
  return std::make_unique<Hdf5Exporter>(out_dir, act, split);
}

}  // namespace qshard::exporting
