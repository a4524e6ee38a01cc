#include "pipeline/checkpoint.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "core/test_hooks.h"
#include "io/file_io.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "pipeline/output_checksums.h"
#include "quant/awq.h"

namespace qshard {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kCallsTensor = "qshard.calls";  // the segment's calls, JSON text as U8

json module_to_json(const ModuleReport& m) {
  json j = {{"module", m.module},   {"format", m.format},         {"rel_error", m.rel_error},
            {"gptq_loss", m.gptq_loss}, {"seconds", m.seconds}, {"damp_escalations", m.damp_escalations}};
  if (m.routed_tokens >= 0) {
    j["routed_tokens"] = m.routed_tokens;
    j["rtn_fallback"] = m.rtn_fallback;
  }
  return j;
}

ModuleReport module_from_json(const json& j) {
  ModuleReport m;
  m.module = j.at("module").get<std::string>();
  m.format = j.at("format").get<std::string>();
  m.rel_error = j.at("rel_error").get<double>();
  m.gptq_loss = j.at("gptq_loss").get<double>();
  m.seconds = j.at("seconds").get<double>();
  m.damp_escalations = j.at("damp_escalations").get<int>();
  m.routed_tokens = j.value("routed_tokens", int64_t(-1));
  m.rtn_fallback = j.value("rtn_fallback", false);
  return m;
}

template <class T>
Tensor vector_view(DType dtype, Shape shape, const std::vector<T>& v) {
  return Tensor::view(dtype, std::move(shape), const_cast<T*>(v.data()), nullptr);
}

template <class T>
std::vector<T> tensor_vector(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

// Points the layer's forward at a recorded tensor if `name` is one of its weights; the
// rest of a segment (embeddings, anything a method adds) only goes to the exporter.
void assign_layer_weight(CausalLM& lm, int64_t layer, const std::string& name, const Tensor& host,
                         LayerWeights& w) {
  const Architecture& a = lm.arch();
  for (const NormSlot& n : a.norms)
    if (name == lm.layer_tensor(layer, n.name) + ".weight") {
      w.*(n.member) = lm.backend().upload(host);
      return;
    }
  for (const DenseLinearSlot& d : dense_linears(lm.spec()))
    if (name == lm.layer_tensor(layer, d.name) + ".weight") {
      (w.*(d.member)).weight = lm.backend().upload(host);
      return;
    }
  for (const LinearSlot& s : layer_linears(lm.spec())) {
    const std::string base = lm.layer_tensor(layer, s.name);
    const bool weight = name == base + ".weight";
    if (weight || name == base + ".bias") {
      LinearWeights& lw = linear_of(w, s);
      (weight ? lw.weight : lw.bias) = lm.backend().upload(host);
      return;
    }
  }
}

}  // namespace

// Tees export calls into the current segment's file (streamed, so a segment's tensors
// are never all in memory), committed under its final name by commit().
class RunCheckpoint::Recorder final : public Exporter {
 public:
  // Every rank makes the same export calls (export/exporter.h, WriteSplit); rank 0
  // records them (`record`), the others only pass them on.
  Recorder(std::string dir, Exporter* real, bool record) : dir_(std::move(dir)), real_(real), record_(record) {}
  Exporter* real() { return real_; }

  void add_dense(const std::string& name, const Tensor& t) override {
    real_->add_dense(name, t);
    if (!record_) return;
    const std::string key = "d." + std::to_string(calls_.size());
    writer().add(key, t);
    calls_.push_back({{"op", "dense"}, {"name", name}, {"tensor", key}});
  }

  void add_quantized(const std::string& module, const QuantizedLinear& q) override {
    real_->add_quantized(module, q);
    if (!record_) return;
    const std::string key = "q." + std::to_string(calls_.size());
    SafetensorsWriter& w = writer();
    w.add(key + ".codes", vector_view(DType::U8, {q.out_features, q.in_features}, q.codes));
    w.add(key + ".scales", vector_view(DType::F32, {int64_t(q.scales.size())}, q.scales));
    if (!q.zeros.empty()) w.add(key + ".zeros", vector_view(DType::F32, {int64_t(q.zeros.size())}, q.zeros));
    if (!q.g_idx.empty()) w.add(key + ".g_idx", vector_view(DType::I32, {int64_t(q.g_idx.size())}, q.g_idx));
    if (!q.super_scales.empty())  // GGML K-quants' FP16 d, dmin
      w.add(key + ".super_scales", vector_view(DType::F32, {int64_t(q.super_scales.size())}, q.super_scales));
    const std::vector<float> ts{q.tensor_scale};
    w.add(key + ".tensor_scale", vector_view(DType::F32, {1}, ts));
    calls_.push_back({{"op", "quantized"},
                      {"module", module},
                      {"tensor", key},
                      {"family", int(q.format.family)},
                      {"bits", q.format.bits},
                      {"group_size", q.format.group_size},
                      {"symmetric", q.format.symmetric},
                      {"out_features", q.out_features},
                      {"in_features", q.in_features},
                      {"zeros", !q.zeros.empty()},
                      {"g_idx", !q.g_idx.empty()},
                      {"super_scales", !q.super_scales.empty()}});
  }

  void finish(const ExportInfo& info) override { real_->finish(info); }

  // Writes the calls since the last commit as `basename`.safetensors (atomic, fsync'd).
  void commit(const std::string& basename) {
    SafetensorsWriter& w = writer(basename);
    const std::string text = calls_.dump();
    const std::vector<char> bytes(text.begin(), text.end());
    w.add(kCallsTensor, vector_view(DType::U8, {int64_t(bytes.size())}, bytes));
    w.finish();
    writer_.reset();
    calls_ = json::array();
  }

  // The next segment's file: begun at its first call, named when it is known.
  void set_next(std::string basename) { next_ = std::move(basename); }

 private:
  SafetensorsWriter& writer(const std::string& basename = "") {
    if (!writer_) {
      const std::string& b = basename.empty() ? next_ : basename;
      writer_ = std::make_unique<SafetensorsWriter>(dir_, b, UINT64_MAX, std::map<std::string, std::string>{});
    }
    return *writer_;
  }

  std::string dir_;
  Exporter* real_;
  bool record_;
  std::string next_;
  std::unique_ptr<SafetensorsWriter> writer_;
  json calls_ = json::array();
};

RunCheckpoint::RunCheckpoint(std::string out_dir, json plan, int64_t num_layers, Communicator& comm)
    : out_dir_(std::move(out_dir)), plan_(std::move(plan)), num_layers_(num_layers), comm_(comm) {}

RunCheckpoint::~RunCheckpoint() = default;

std::string RunCheckpoint::dir() const { return (fs::path(out_dir_) / ".qshard").string(); }

std::string RunCheckpoint::segment_file(int64_t segment) const {
  if (segment >= num_layers_) return "tail.safetensors";
  char name[64];
  std::snprintf(name, sizeof name, "layer-%05lld.safetensors", static_cast<long long>(segment));
  return name;
}

void RunCheckpoint::write_manifest() const {
  json m = {{"qshard_manifest", 1},
            {"complete", complete_},
            {"plan_sha256", sha256_hex(plan_.dump())},
            {"plan", plan_},
            {"segments", segments_}};
  if (complete_) m["files"] = files_;
  write_file_atomic(dir() + "/manifest.json", m.dump(1) + "\n");
  fsync_dir(dir());
}

std::string describe_plan_difference(const json& old_plan, const json& new_plan) {
  std::vector<std::string> diffs;
  auto show = [](const json& p, const std::string& key) {
    if (!p.is_object() || !p.contains(key)) return std::string("(absent)");
    return p[key].is_string() ? p[key].get<std::string>() : p[key].dump();
  };
  std::map<std::string, int> keys;
  for (const json* p : {&old_plan, &new_plan})
    if (p->is_object())
      for (auto it = p->begin(); it != p->end(); ++it) keys[it.key()] = 1;
  for (const auto& [key, _] : keys) {
    const std::string a = show(old_plan, key), b = show(new_plan, key);
    if (a != b) diffs.push_back(str_cat(key, " was ", a, ", now ", b));
  }
  if (diffs.empty()) return "";
  return diffs.size() == 1 ? diffs[0] : str_cat(diffs[0], "; and ", diffs.size() - 1, " more difference(s)");
}

std::unique_ptr<RunCheckpoint> RunCheckpoint::open(const std::string& out_dir, const json& plan,
                                                   int64_t num_layers, bool overwrite, Communicator& comm) {
  std::unique_ptr<RunCheckpoint> ck(new RunCheckpoint(out_dir, plan, num_layers, comm));
  int64_t state[2] = {0, 0};  // segments done, complete
  if (comm.is_root()) {
    const std::string manifest_path = ck->dir() + "/manifest.json";
    const bool has_config = fs::exists(fs::path(out_dir) / "config.json");
    bool fresh = true;
    if (fs::exists(manifest_path)) {
      json m;
      bool readable = true;
      try {
        m = read_json_file(manifest_path);
      } catch (const InputError&) {
        readable = false;
      }
      // Valid JSON of the wrong shape (edited, or damaged outside qshard) is unreadable too.
      if (readable) {
        try {
          const std::string diff = describe_plan_difference(m.value("plan", json()), plan);
          const bool was_complete = m.value("complete", false);
          const json segments = m.value("segments", json::array());
          if (diff.empty() && !overwrite) {
            if (was_complete && m.contains("files")) {
              // "Nothing to do" only for an output that is still what was written.
              const std::vector<std::string> problems = verify_output(out_dir, m["files"]);
              if (!problems.empty())
                fail_input("--out ", out_dir, " holds a finished checkpoint of this command, but ",
                           summarize_problems(problems), " (checked against the SHA-256 recorded when it was "
                           "written): add --overwrite to redo it");
              ck->complete_ = true;
              ck->files_ = m["files"];
              fresh = false;
            } else if (was_complete && has_config) {  // made before checksums were recorded
              ck->complete_ = true;
              fresh = false;
            } else if (!was_complete) {
              // Resume after the leading segments whose files are intact.
              for (const json& s : segments) {
                const int64_t i = int64_t(ck->segments_.size());
                const std::string path = ck->dir() + "/" + ck->segment_file(i);
                std::error_code ec;
                const bool ok = s.value("index", int64_t(-1)) == i && s.value("file", "") == ck->segment_file(i) &&
                                fs::exists(path, ec) &&
                                int64_t(fs::file_size(path, ec)) == s.value("bytes", int64_t(-1)) &&
                                sha256_file(path) == s.value("sha256", "");
                if (!ok) {
                  log_warn(path, " does not match its checksum in the manifest: redoing segment ", i, " and later");
                  break;
                }
                ck->segments_.push_back(s);
              }
              ck->done_ = int64_t(ck->segments_.size());
              fresh = false;
              ck->write_manifest();  // drops entries past a damaged file
              if (ck->done_ > 0)
                log_info("resuming ", out_dir, ": ", std::min(ck->done_, num_layers), " of ", num_layers,
                         " layers finished earlier", ck->done_ > num_layers ? ", and the tail" : "");
            }
          } else if (!diff.empty() && !overwrite) {
            if (was_complete && has_config)
              fail_input("--out ", out_dir, " already holds a finished checkpoint made by a different command (",
                         diff, "): choose another directory, or add --overwrite to replace it");
            if (!segments.empty())
              fail_input("--out ", out_dir, " holds an unfinished run of a different command (", diff,
                         "): rerun that command to resume it, or add --overwrite to discard it");
            // Nothing finished yet: nothing to protect.
          }
        } catch (const json::exception&) {
          readable = false;
        }
      }
      if (!readable) {
        if (!overwrite)
          fail_input("--out ", out_dir, ": ", manifest_path, " is unreadable (damaged outside qshard): add "
                     "--overwrite to start over");
        fresh = true;
        ck->segments_ = json::array();
        ck->done_ = 0;
        ck->complete_ = false;
      }
    } else if (has_config && !overwrite) {
      fail_input("--out ", out_dir, " already holds a finished checkpoint (config.json): choose another "
                 "directory, or add --overwrite to replace it");
    }
    if (fresh) {
      // Nothing may look finished while this run works: config.json goes first.
      std::error_code ec;
      for (const char* name : {"config.json", "quantize_config.json", "quantize_report.json", kSha256SumsFile})
        fs::remove(fs::path(out_dir) / name, ec);
      fs::remove_all(ck->dir(), ec);
      fs::create_directories(ck->dir(), ec);
      if (ec) io_fail(ec.value(), "creating", ck->dir());
      ck->write_manifest();
    }
    state[0] = ck->done_;
    state[1] = ck->complete_;
  }
  comm.broadcast(state, sizeof state, 0);
  ck->done_ = state[0];
  ck->complete_ = state[1] != 0;
  if (comm.size() > 1 && ck->done_ > 0) {  // every rank replays: each needs the segments' report rows
    std::string text = comm.is_root() ? ck->segments_.dump() : std::string();
    int64_t n = int64_t(text.size());
    comm.broadcast(&n, sizeof n, 0);
    text.resize(size_t(n));
    comm.broadcast(text.data(), n, 0);
    if (!comm.is_root()) ck->segments_ = json::parse(text);
  }
  return ck;
}

Exporter* RunCheckpoint::wrap(Exporter* real) {
  if (!real) return nullptr;
  recorder_ = std::make_unique<Recorder>(dir(), real, comm_.is_root());
  recorder_->set_next(fs::path(segment_file(done_)).stem().string());
  return recorder_.get();
}

void RunCheckpoint::replay(int64_t segment, CausalLM& lm, LayerWeights* w, std::vector<ModuleReport>* modules,
                           DType weight_dtype) {
  QS_ASSERT(segment < done_, "replay of unfinished segment ", segment);
  Exporter* real = recorder_ ? recorder_->real() : nullptr;
  if (segment >= num_layers_) w = nullptr;
  if (real && modules)
    for (const json& m : segments_.at(size_t(segment)).at("modules")) modules->push_back(module_from_json(m));
  if (!real && !w) return;
  const std::string path = dir() + "/" + segment_file(segment);
  const SafetensorsFile f = SafetensorsFile::open(path);
  const Tensor calls_t = f.get(kCallsTensor);
  const json calls = json::parse(std::string(calls_t.data<char>(), size_t(calls_t.numel())));
  for (const json& c : calls) {
    const std::string key = c.at("tensor").get<std::string>();
    if (c.at("op") == "dense") {
      const std::string name = c.at("name").get<std::string>();
      const Tensor t = f.get(key);
      if (real) real->add_dense(name, t);
      if (w) assign_layer_weight(lm, segment, name, t, *w);
      continue;
    }
    QuantizedLinear q;
    q.format.family = FormatFamily(c.at("family").get<int>());
    q.format.bits = c.at("bits").get<int>();
    q.format.group_size = c.at("group_size").get<int64_t>();
    q.format.symmetric = c.at("symmetric").get<bool>();
    q.out_features = c.at("out_features").get<int64_t>();
    q.in_features = c.at("in_features").get<int64_t>();
    q.codes = tensor_vector<uint8_t>(f.get(key + ".codes"));
    q.scales = tensor_vector<float>(f.get(key + ".scales"));
    if (c.at("zeros").get<bool>()) q.zeros = tensor_vector<float>(f.get(key + ".zeros"));
    if (c.at("g_idx").get<bool>()) q.g_idx = tensor_vector<int32_t>(f.get(key + ".g_idx"));
    if (c.value("super_scales", false)) q.super_scales = tensor_vector<float>(f.get(key + ".super_scales"));
    q.tensor_scale = f.get(key + ".tensor_scale").data<float>()[0];
    const std::string module = c.at("module").get<std::string>();
    if (real) real->add_quantized(module, q);
    if (w) {
      ExportNumerics numerics;
      numerics.weight_dtype = weight_dtype;
      assign_layer_weight(lm, segment, module + ".weight", dequantize_exported(q, numerics), *w);
    }
  }
}

void RunCheckpoint::commit(int64_t segment, const std::vector<ModuleReport>& modules) {
  const std::string point = segment >= num_layers_ ? std::string("tail") : "layer-" + std::to_string(segment);
  if (recorder_ && comm_.is_root()) {
    const std::string file = segment_file(segment);
    recorder_->commit(fs::path(file).stem().string());
    recorder_->set_next(fs::path(segment_file(segment + 1)).stem().string());
    const std::string path = dir() + "/" + file;
    json mods = json::array();
    for (const ModuleReport& m : modules) mods.push_back(module_to_json(m));
    segments_.push_back({{"index", segment},
                         {"file", file},
                         {"bytes", int64_t(fs::file_size(path))},
                         {"sha256", sha256_file(path)},
                         {"modules", mods}});
    test_kill_point(point + "-file");
    write_manifest();
  }
  done_ = segment + 1;
  test_kill_point(point);
}

void RunCheckpoint::mark_complete() {
  test_kill_point("finished");
  if (!comm_.is_root()) return;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir(), ec))
    if (e.path().filename() != "manifest.json") fs::remove(e.path(), ec);
  segments_ = json::array();
  files_ = record_output_checksums(out_dir_);  // also writes OUT/SHA256SUMS
  complete_ = true;
  write_manifest();
}

}  // namespace qshard
