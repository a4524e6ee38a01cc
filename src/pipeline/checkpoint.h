// Resumable quantization runs. OUT/.qshard/ holds manifest.json (the plan the run was
// started from: input identities, every option that changes the result, rank count) and
// one safetensors file per finished segment. Segment l < num_layers is every export call
// made while quantizing layer l (the embeddings go with layer 0); segment num_layers is
// the tail (final norm, lm_head). A segment's file is written atomically and fsync'd, its
// SHA-256 recorded in the manifest (itself replaced atomically), so a SIGKILL at any
// moment leaves a manifest that names only complete, verified files.
//
// Rerunning the same command replays the finished segments' calls, in their original
// order, into a fresh exporter (so the export is byte for byte what an uninterrupted run
// writes) and rebuilds each finished layer's forward weights from the recorded tensors
// (dequantized quantized modules; recorded dense tensors such as norms replace the
// source's) to carry the calibration activations to the first unfinished layer.
// After a successful finish the segment files are deleted and the manifest kept, marked
// complete with every output file's SHA-256 (also OUT/SHA256SUMS, output_checksums.h),
// so the same command again checks the output and then has nothing to do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "export/exporter.h"
#include "model/decoder.h"
#include "pipeline/report.h"

namespace qshard {

class RunCheckpoint {
 public:
  // Collective. Rank 0 reads OUT/.qshard/manifest.json. No manifest: a fresh run (an
  // OUT holding a config.json is refused unless overwrite). Same plan, finished: the
  // output is checked against its recorded checksums (InputError naming a damaged,
  // missing or extra file). Same plan, unfinished: resume after the
  // leading finished segments whose files still match their checksums. Different plan:
  // InputError naming the first difference, unless overwrite (the old run is discarded).
  // Every rank learns how many segments are done; the others read segment files only.
  static std::unique_ptr<RunCheckpoint> open(const std::string& out_dir, const nlohmann::json& plan,
                                             int64_t num_layers, bool overwrite, Communicator& comm);
  ~RunCheckpoint();

  bool complete() const { return complete_; }  // this very command already finished here
  int64_t segments_done() const { return done_; }
  bool tail_done() const { return done_ > num_layers_; }

  // The exporter the pipeline should write to: calls go to `real` and are recorded into
  // the current segment. Null (ranks that do not write) stays null.
  Exporter* wrap(Exporter* real);

  // ---- pipeline hooks
  // Replays finished segment `segment` into the real exporter, appends its modules'
  // report, and (if `w` is given, segment < num_layers) overwrites w with the recorded
  // weights of that layer, quantized ones dequantized and rounded to `weight_dtype` as the
  // first run's forward held them (the AWQ family's own quantization: fake-quant's dtype;
  // GPTQ and RTN: F32). Call in segment order, before any new export call.
  void replay(int64_t segment, CausalLM& lm, LayerWeights* w, std::vector<ModuleReport>* modules,
              DType weight_dtype = DType::F32);
  // Segment `segment` is finished: `modules` are its report rows. Rank 0 commits the
  // recorded calls; every rank passes the test kill point "layer-N".
  void commit(int64_t segment, const std::vector<ModuleReport>& modules);
  // After the exporter's finish(): drops the segment files, marks the manifest complete.
  void mark_complete();

 private:
  class Recorder;
  RunCheckpoint(std::string out_dir, nlohmann::json plan, int64_t num_layers, Communicator& comm);
  std::string dir() const;
  std::string segment_file(int64_t segment) const;  // "layer-00003.safetensors", "tail.safetensors"
  void write_manifest() const;

  std::string out_dir_;
  nlohmann::json plan_;
  int64_t num_layers_;
  Communicator& comm_;
  nlohmann::json segments_ = nlohmann::json::array();  // rank 0: committed segments
  nlohmann::json files_ = nlohmann::json::object();     // rank 0, once complete: output checksums
  int64_t done_ = 0;
  bool complete_ = false;
  std::unique_ptr<Recorder> recorder_;
};

// A plan's differences from another, as "KEY was A, now B" for the first differing key
// (and how many more differ); empty when equal.
std::string describe_plan_difference(const nlohmann::json& old_plan, const nlohmann::json& new_plan);

}  // namespace qshard
