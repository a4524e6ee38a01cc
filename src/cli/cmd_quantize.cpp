// qshard quantize: calibrate, quantize layer by layer, export, report.
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "cli/commands.h"
#include "cli/device.h"
#include "cli/options.h"
#include "cli/quantize_plan.h"
#include "core/error.h"
#include "core/log.h"
#include "core/stop.h"
#include "export/exporter.h"
#include "pipeline/bpw_plan.h"
#include "pipeline/gguf_mix.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "pipeline/layer_owner.h"
#include "pipeline/moe_experts.h"
#include "pipeline/quantize.h"

namespace qshard::cli {

namespace {

constexpr const char* kUsage =
    "usage: qshard quantize --model DIR --out DIR --calib FILE [--method gptq|rtn|awq|...]\n"
    "                       [--format int4] [--group-size 128] [--sym|--asym] [--act-order]\n"
    "                       [--static-groups] [--damp 0.01] [--n-calib 128] [--calib-seqlen 2048]\n"
    "                       [--export gptq|compressed-tensors|awq|gguf|fakequant|hdf5] [--skip REGEX]...\n"
    "                       [--act-format none|int8|mxint8] [--target-bpw B [--bpw-formats LIST]]\n\n"
    "Quantizes the Linear layers of a Hugging Face checkpoint layer by layer (true-sequential:\n"
    "q/k/v, then o, then gate/up, then down, each calibrated on the outputs of the already\n"
    "quantized ones) and writes a checkpoint that engines load. lm_head and embeddings stay\n"
    "as they are unless --quantize-lm-head. A per-module report (relative output error\n"
    "||WX-QX||^2/||WX||^2 on the calibration inputs, GPTQ loss, time) is printed and written\n"
    "to OUT/quantize_report.json. Evaluate the result with 'qshard eval --model OUT\n"
    "--reference DIR'.\n\n"
    "Formats: int2..int8 (group-wise, --group-size 32/64/128/... or -1 per channel,\n"
    "--sym or --asym), mxint8/mxint6/mxint4/mxint3 (E8M0 shared exponent per block of\n"
    "--group-size 16/32/128, default 32), mxfp4 (E2M1, block 32), nvfp4 (E2M1, E4M3 scale per\n"
    "16, fp32 tensor scale). Exports: gptq (int2/3/4/8), compressed-tensors (int), awq (int4\n"
    "--asym, AutoAWQ GEMM layout), fakequant (dequantized dense weights, any format), hdf5\n"
    "(codes, scales, zeros, g_idx per module).\n"
    "Activations (--act-format): the inputs of the quantized Linears are fake-quantized during\n"
    "calibration, and the export records it: int8 = per-token dynamic symmetric INT8 (vLLM\n"
    "W8A8; compressed-tensors int-quantized for --format int8 --group-size -1 --sym (W8A8) or\n"
    "int4 --sym (W4A8)), mxint8 = E8M0 exponent per 32 inputs (fakequant and hdf5 only).\n"
    "Calibration: a text file (tokenized with the model's tokenizer, [BOS] first) or a token\n"
    "file (*.tokens / *.bin, little-endian int32); --n-calib windows of --calib-seqlen\n"
    "tokens, consecutive from the start unless --calib-shuffle SEED.\n"
    "Methods: gptq, rtn; awq (AutoAWQ: per-channel scales x^alpha searched on each scaling\n"
    "group's output, folded into the norms / previous linear, then the clip search),\n"
    "awq-joint (scales, per-group ranges and rounding fitted together against tr(dW H dW^T),\n"
    "docs/awq-joint.md), awq-dh (AWQ + Kneedle outliers + greedy flip rounding),\n"
    "smoothquant (s = max|X|^a / max|W|^(1-a) folded into the norms, then RTN), and\n"
    "awq+gptq, awq-joint+gptq, smoothquant+gptq (scales folded first, then GPTQ).\n"
    "Recipe file (--recipe): {\"rules\": [{\"match\": REGEX, \"skip\": true} or\n"
    "{\"match\": REGEX, \"format\": \"int8\", \"group_size\": 128, \"sym\": true}]}; the last\n"
    "matching rule wins; --skip REGEX rules apply after the recipe.\n"
    "Mixed precision (--target-bpw B): a first calibration pass measures, for every quantized\n"
    "Linear and every format of --bpw-formats, the output error tr(dW H dW^T) of RTN to that\n"
    "format, scaled by the model's KLD per unit of it (that module alone quantized, on\n"
    "--bpw-kld-windows windows); each module then gets the format that minimises the summed\n"
    "predicted KLD with the mean\n"
    "bits per weight (scales and zeros counted) at most B. The plan is printed and written to\n"
    "the report; --recipe / --skip decide which modules are quantized, the plan their formats\n"
    "(docs/mixed-precision.md). --export gguf: GGUF types (default q3_k,q4_k,q5_k,q6_k,q8_0; a\n"
    "K-quant on rows its 256-block does not divide counts as llama.cpp's 32-block fallback);\n"
    "with --format gguf:MIX, token_embd/output take that mix's types.\n"
    "Resume: OUT/.qshard/ records every finished layer; if the run is killed, the same\n"
    "command again continues at the first unfinished layer and writes the same bytes. A\n"
    "different command on that OUT is refused (naming the option and both values) unless\n"
    "--overwrite. SIGTERM / SIGINT stop the run at the next safe point on every rank (one\n"
    "line; exit 143 / 130); the same command resumes it. A finished OUT holds SHA256SUMS; the\n"
    "same command again checks it before 'nothing to do' ('qshard verify OUT' on demand).";

std::vector<int32_t> load_calibration_stream(const std::string& model_dir, const std::string& path,
                                             Communicator& comm) {
  std::vector<int32_t> stream;
  int64_t n = 0;
  if (comm.is_root()) {
    if (is_token_file(path)) {
      stream = read_token_file(path);
    } else {
      const std::string text =
          read_text_input(path, "a token file must be named *.tokens or *.bin ('qshard tokenize' writes one)");
      stream = token_stream(*Tokenizer::load(model_dir), text);
    }
    n = int64_t(stream.size());
  }
  comm.broadcast(&n, sizeof n, 0);
  stream.resize(size_t(n));
  comm.broadcast(stream.data(), n * int64_t(sizeof(int32_t)), 0);
  return stream;
}

// A run that fails before it finishes its first layer has nothing to resume: it removes
// what it created in --out (all of --out if it made it; else only the new entries), so a
// refused command leaves the directory as it was. Later failures keep OUT for resume.
class OutputCleanup {
 public:
  OutputCleanup(std::string out, const std::unique_ptr<RunCheckpoint>& checkpoint, bool owner)
      : out_(std::move(out)), checkpoint_(checkpoint), owner_(owner), exceptions_(std::uncaught_exceptions()) {
    std::error_code ec;
    existed_ = std::filesystem::exists(out_, ec);
    if (existed_)
      for (const auto& e : std::filesystem::directory_iterator(out_, ec)) before_.insert(e.path().filename());
  }
  ~OutputCleanup() {
    if (!owner_ || std::uncaught_exceptions() == exceptions_) return;  // success, or not the writer
    if (checkpoint_ && checkpoint_->segments_done() > 0) return;      // resumable work is kept
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!existed_) {
      fs::remove_all(out_, ec);
      return;
    }
    std::vector<fs::path> created;
    for (const auto& e : fs::directory_iterator(out_, ec))
      if (!before_.count(e.path().filename())) created.push_back(e.path());
    for (const auto& p : created) fs::remove_all(p, ec);
  }
  OutputCleanup(const OutputCleanup&) = delete;
  OutputCleanup& operator=(const OutputCleanup&) = delete;

 private:
  std::string out_;
  const std::unique_ptr<RunCheckpoint>& checkpoint_;
  bool owner_;
  int exceptions_;
  bool existed_ = false;
  std::set<std::filesystem::path> before_;
};

void prepare_out_dir(const std::string& out, const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(out, model_dir, ec))
    fail_input("--out ", out, " is the input model directory: choose a new directory");
  // An OUT with a config.json is judged by RunCheckpoint::open (resume, or refuse).
  fs::create_directories(out, ec);
  if (ec)
    fail_input("--out ", out, ": cannot create the directory (", ec.message(), "): choose a directory you can write to");
}

// K-quant scales are fitted per 256-element super-block (llama.cpp's fit), which the
// per-group range searches of smoothquant and awq-dh cannot do.
void check_method_takes(const std::string& method, const QuantFormat& f) {
  const bool k_ok = method == "rtn" || method == "gptq" || method == "awq" || method == "awq+gptq" ||
                    method == "awq-joint" || method == "awq-joint+gptq";
  if (f.uses_kquant_fit() && !k_ok)
    fail_input("--method ", method, " does not take --format ", f.name(), " (its scales are fitted ",
               f.ggml_block() == 256 ? "per 256-element super-block" : "by llama.cpp's block scale search",
               "): use --method rtn, gptq, awq, awq+gptq, awq-joint or awq-joint+gptq");
}

// --target-bpw's candidates and modules, refused like --format and --recipe before any
// work: formats the export, --act-format or --method cannot take, groups that do not
// divide a module, a budget below the cheapest candidates.
BpwPlan bpw_plan_inputs(const po::variables_map& vm, ExportKind kind, const QuantizeOptions& opt, bool gguf_mix,
                        const std::string& list, double target, const ModelSpec& spec, const Recipe& recipe,
                        ActFormat act, bool scattered) {
  (void)gguf_mix;  // a mix gives token_embd/output their types; the plan every Linear's
  if (kind == ExportKind::Awq)
    fail_input("--target-bpw with --export awq: an AWQ checkpoint holds one format (int4, one group size); "
               "use --export gptq, compressed-tensors, hdf5, gguf or fakequant");
  if (kind == ExportKind::Gguf && spec.num_experts > 0)
    fail_input("--target-bpw with --export gguf of model_type ", spec.model_type, " (mixture of experts): "
               "llama.cpp stacks a layer's experts in one tensor of one type, which a per-module plan "
               "does not keep; give one 32-block --format (", kGgufExpertFormats, ")");
  if (opt.quantize_lm_head)
    fail_input("--target-bpw plans the decoder layers' Linears, not lm_head yet: drop --quantize-lm-head");
  if (vm["bpw-kld-windows"].as<int64_t>() < 0) fail_input("--bpw-kld-windows must not be negative");
  if (!(target > 0)) fail_input("--target-bpw ", target, " must be a positive number of bits per weight");
  const bool sym = vm.count("asym") == 0;
  std::vector<QuantFormat> formats;
  const auto fits = [&](const QuantFormat& f) {
    check_export_supports(kind, f, opt.gptq.act_order);
    check_export_supports_act(kind, act, f, scattered);
    check_method_takes(opt.method, f);
  };
  if (vm.count("bpw-formats")) {
    formats = parse_bpw_formats(list, sym);
    for (const auto& f : formats) {
      try {
        fits(f);
      } catch (const InputError& e) {
        fail_input("--bpw-formats ", f.describe(), ": ", e.what());
      }
    }
  } else {
    for (const auto& f : default_bpw_formats(sym, kind == ExportKind::Gguf)) {
      try {
        fits(f);
        formats.push_back(f);
      } catch (const InputError&) {
        log_info("--target-bpw: the default candidate ", f.describe(), " is left out (--export ",
                 export_kind_name(kind), " cannot hold it)");
      }
    }
    if (formats.empty())
      fail_input("--target-bpw: --export ", export_kind_name(kind), " holds none of the default candidates: "
                 "give --bpw-formats");
  }
  return plan_modules(spec, recipe, formats, target);
}

}  // namespace

int run_quantize(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string model_dir, out_dir, calib_path, format_name = "int4", export_name = "gptq", recipe_path;
  std::string gguf_dense = "auto";
  std::string act_name = "none";
  int64_t group_size = 0;
  std::string block_gptq, moe_starved, propagate, awq_loss, device_name = "auto";
  uint64_t shuffle_seed = 0;
  double max_shard_gb = 5.0;
  std::vector<std::string> skips;
  double target_bpw = 0;
  int64_t bpw_kld_windows = 2;
  std::string bpw_formats;
  QuantizeOptions opt;
  CalibrationOptions calib;
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "Hugging Face model directory (bf16/f16/f32 weights)")
      ("out", po::value(&out_dir)->required(), "output directory (must not hold a finished checkpoint)")
      ("calib", po::value(&calib_path)->required(), "calibration text file, or token file (*.tokens, *.bin)")
      ("method", po::value(&opt.method)->default_value("gptq"),
       "gptq, rtn, awq, awq-joint, awq-dh, smoothquant, awq+gptq, awq-joint+gptq, smoothquant+gptq")
      ("device", po::value(&device_name)->default_value("auto"),
       "cpu, cuda, cuda:N or auto (cuda when this build has CUDA and a GPU is visible): where the "
       "forward, Hessians and GPTQ/RTN run")
      ("awq-grid", po::value(&opt.scaling.n_grid)->default_value(20), "AWQ family: scale exponents searched (alpha = i/N)")
      ("awq-loss", po::value(&awq_loss)->default_value("linear"),
       "AWQ family scale-search loss: linear (MSE of the scaled linears' outputs, e.g. q,k,v together) "
       "or block (MSE of the attention / MLP block output, AutoAWQ's module2inspect; slower)")
      ("no-awq-clip", "awq, awq-dh: skip the clip (range) search after scaling")
      ("awq-propagate", po::value(&propagate),
       "AWQ family: feed the next layer the fp or quantized layer output (default: fp for awq and "
       "awq-dh as AutoAWQ, quantized otherwise)")
      ("joint-range-sweeps", po::value(&opt.scaling.joint.range_sweeps)->default_value(2),
       "awq-joint: coordinate-descent sweeps over group ranges")
      ("joint-rounding-sweeps", po::value(&opt.scaling.joint.rounding_sweeps)->default_value(4),
       "awq-joint: coordinate-descent sweeps over codes (0: nearest rounding)")
      ("joint-damp", po::value(&opt.scaling.joint.damp)->default_value(0.1f, "0.1"),
       "awq-joint: the fits use H + lambda * mean(diag H) * I, lambda = joint-damp + joint-damp-per-dim * "
       "in_features / calibration tokens (regularises small calibration sets)")
      ("joint-damp-per-dim", po::value(&opt.scaling.joint.damp_per_dim)->default_value(0.5f, "0.5"),
       "awq-joint: see --joint-damp")
      ("smooth-alpha", po::value(&opt.scaling.smooth_alpha)->default_value(0.5), "smoothquant: migration strength alpha")
      ("max-flip-percent", po::value(&opt.scaling.max_flip_percent)->default_value(1.0),
       "awq-dh: at most this % of in_features flipped per output channel")
      ("knee-tolerance", po::value(&opt.scaling.knee_tolerance)->default_value(0.0),
       "awq-dh: shift of the Kneedle knee, as a fraction of the half curve (larger: lower threshold, more "
       "channels masked as outliers)")
      ("format", po::value(&format_name)->default_value("int4"),
       "int2..int8, mxint8, mxint6, mxint4, mxint3, mxfp4, nvfp4")
      ("group-size", po::value(&group_size)->default_value(0),
       "columns per scale: 32/64/128/... or -1 per channel (0: 128 for int, 32 for MX, 16 for nvfp4)")
      ("sym", "symmetric int quantization (the default; what engines load best)")
      ("asym", "asymmetric int quantization (scale and zero point)")
      ("act-order", "GPTQ: quantize columns in order of decreasing Hessian diagonal (desc_act)")
      ("static-groups", "GPTQ: fix group parameters before the loop (kernels need no g_idx reorder)")
      ("damp", po::value(&opt.gptq.damp)->default_value(0.01), "GPTQ damping, relative to mean(diag H)")
      ("block-size", po::value(&opt.gptq.block_size)->default_value(128), "GPTQ lazy-batch width")
      ("block-gptq", po::value(&block_gptq)->default_value("columnwise"),
       "GPTQ for MX/NVFP4: columnwise (block scale fitted from updated weights, then one column "
       "per step) or microblock (whole block at once, algorithms.md 7.3)")
      ("mse-clip", "search clip (shrink) factors per group by MSE (RTN and GPTQ group fits)")
      ("n-calib", po::value(&calib.n_samples)->default_value(128), "calibration windows")
      ("calib-seqlen", po::value(&calib.seqlen)->default_value(2048), "tokens per calibration window")
      ("calib-shuffle", po::value(&shuffle_seed), "random calibration windows from this seed")
      ("export", po::value(&export_name)->default_value("gptq"), "gptq, compressed-tensors, awq, gguf, fakequant, hdf5")
      ("gguf-dense", po::value(&gguf_dense)->default_value("auto"),
       "--export gguf: unquantized 2-D tensors as f32, f16, bf16 or auto (their stored dtype); 1-D always f32")
      ("act-format", po::value(&act_name)->default_value("none"),
       "quantize the quantized Linears' inputs: none, int8 (per token, W8A8), mxint8 (blocks of 32)")
      ("skip", po::value(&skips)->composing(), "leave modules matching this regex unquantized (repeatable)")
      ("recipe", po::value(&recipe_path), "JSON recipe of per-module rules (see above)")
      ("target-bpw", po::value(&target_bpw),
       "mixed precision: choose each quantized Linear's format from --bpw-formats to minimise the "
       "measured error at this mean bits per weight (scales and zeros counted)")
      ("bpw-formats", po::value(&bpw_formats),
       "--target-bpw candidates, NAME[:gGROUP][:sym|:asym] comma-separated (default "
       "int3:g64,int4:g64,int4:g32,int8:g128, --sym/--asym, less those --export cannot hold)")
      ("bpw-kld-windows", po::value(&bpw_kld_windows)->default_value(2),
       "--target-bpw: calibration windows on which each module's effect on the output (KLD per unit of "
       "its output error) is measured; 0: plan on the output errors alone")
      ("quantize-lm-head", "quantize lm_head too (in row chunks)")
      ("no-true-sequential", "collect every group's Hessian from the unquantized layer (one pass)")
      ("moe-min-tokens", po::value(&opt.expert_min_tokens)->default_value(opt.expert_min_tokens),
       "MoE: an expert routed fewer calibration tokens than this (over all ranks) is starved")
      ("moe-starved", po::value(&moe_starved)->default_value(starved_experts_name(opt.moe_starved)),
       "MoE: a starved expert's quantization: rtn (warned), all-tokens (GPTQ, Hessian of every token of "
       "the layer through it), routed (GPTQ on its few tokens; RTN if none)")
      ("batch-tokens", po::value(&opt.batch_tokens)->default_value(2048), "calibration tokens per forward")
      ("max-shard-size", po::value(&max_shard_gb)->default_value(5.0), "output shard size limit in GB")
      ("overwrite", "discard an unfinished or finished run of a different command in --out")
      ("quiet", "no progress on stderr")
      ("verbose", "debug log lines on stderr (per-group scale exponents, losses, timings)");
  po::variables_map vm;
  if (!parse_options(args, kUsage, desc, vm, comm.is_root())) return 0;
  // SIGTERM / SIGINT stop at the next safe point (core/stop.h). Only quantize has safe
  // points; the other commands keep the default (end at once). After MPI start-up,
  // which may install handlers of its own.
  install_stop_handlers();
  if (vm.count("quiet")) log_set_level(LogLevel::Quiet);
  if (vm.count("verbose")) log_set_level(LogLevel::Debug);
  if (vm.count("sym") && vm.count("asym")) fail_input("--sym and --asym exclude each other");
  opt.gptq.act_order = vm.count("act-order") > 0;
  opt.gptq.static_groups = vm.count("static-groups") > 0;
  opt.quantize_lm_head = vm.count("quantize-lm-head") > 0;
  opt.true_sequential = vm.count("no-true-sequential") == 0;
  opt.moe_starved = parse_starved_experts(moe_starved);
  if (opt.expert_min_tokens < 0) fail_input("--moe-min-tokens must not be negative");
  // Bench/test switch, not an option: the re-running true-sequential path (quantize.h)
  // beside the staged one, which must write the same bytes (bench/slice70b, tests).
  opt.sequential_rerun = std::getenv("QSHARD_SEQUENTIAL_RERUN") != nullptr;
  opt.clip.enabled = opt.gptq.clip.enabled = vm.count("mse-clip") > 0;
  if (vm.count("calib-shuffle")) calib.shuffle_seed = shuffle_seed;
  if (block_gptq == "microblock")
    opt.gptq.block_gptq = BlockGptq::Microblock;
  else if (block_gptq != "columnwise")
    fail_input("--block-gptq ", block_gptq, " is not one of columnwise, microblock");
  calib.path = calib_path;
  parse_method(opt.method);  // refuses unknown and reversed combinations
  opt.scaling.clip = vm.count("no-awq-clip") == 0;
  if (awq_loss != "linear" && awq_loss != "block") fail_input("--awq-loss ", awq_loss, " is not linear or block");
  opt.scaling.block_loss = awq_loss == "block";
  if (!propagate.empty()) {
    if (propagate != "fp" && propagate != "quantized") fail_input("--awq-propagate ", propagate, " is not fp or quantized");
    opt.propagate_fp = propagate == "fp";
  }
  if (opt.scaling.n_grid < 1) fail_input("--awq-grid must be positive");
  if (!(opt.scaling.max_flip_percent >= 0 && opt.scaling.max_flip_percent <= 100))
    fail_input("--max-flip-percent must be in [0, 100]");
  if (!(opt.scaling.knee_tolerance >= 0 && opt.scaling.knee_tolerance <= 1))
    fail_input("--knee-tolerance must be in [0, 1]");
  if (!(opt.scaling.smooth_alpha >= 0 && opt.scaling.smooth_alpha <= 1)) fail_input("--smooth-alpha must be in [0, 1]");
  if (opt.scaling.joint.range_sweeps < 0 || opt.scaling.joint.rounding_sweeps < 0)
    fail_input("--joint-range-sweeps and --joint-rounding-sweeps must not be negative");
  if (!(opt.scaling.joint.damp >= 0.0f) || !(opt.scaling.joint.damp_per_dim >= 0.0f))
    fail_input("--joint-damp and --joint-damp-per-dim must not be negative");
  if (opt.gptq.damp < 0) fail_input("--damp must not be negative");
  if (opt.gptq.block_size < 1) fail_input("--block-size must be positive");
  if (opt.batch_tokens < 1) fail_input("--batch-tokens must be positive");

  const std::optional<GgufMix> mix = parse_gguf_mix(format_name);
  const QuantFormat format = mix ? mix->base : QuantFormat::parse(format_name, group_size, vm.count("asym") == 0);
  const ExportKind kind = parse_export_kind(export_name);
  if (gguf_dense != "auto" && gguf_dense != "f32" && gguf_dense != "f16" && gguf_dense != "bf16")
    fail_input("--gguf-dense '", gguf_dense, "' is not valid: use f32, f16, bf16 or auto");
  check_export_supports(kind, format, opt.gptq.act_order);
  const ActFormat act = parse_act_format(act_name);
  const bool scattered = opt.gptq.act_order && !opt.gptq.static_groups;
  check_export_supports_act(kind, act, format, scattered);
  check_method_takes(opt.method, format);
  Recipe recipe(format);
  if (!recipe_path.empty()) recipe.load_file(recipe_path);
  for (const auto& s : skips) recipe.add_skip(s);
  for (const auto& r : recipe.rules())
    if (r.format) {
      check_export_supports(kind, *r.format, opt.gptq.act_order);
      check_export_supports_act(kind, act, *r.format, scattered);
      check_method_takes(opt.method, *r.format);
    }

  // Everything that can be refused is checked before --out is touched.
  const std::string device = resolve_device(device_name);
  auto backend = make_backend(device);  // no GPU is one clear line
  ModelSpec spec = ModelSpec::load(model_dir);
  check_export_supports_model(kind, spec, format, mix.has_value());
  GgufPlan gguf_plan;  // llama.cpp's per-tensor types for a mix, and its fallbacks
  if (mix || format.ggml_block() == 256) {
    gguf_plan = plan_gguf(spec, format, mix ? &*mix : nullptr, opt.method != "rtn");
    for (const auto& [module, f] : gguf_plan.modules) {
      if (f) check_method_takes(opt.method, *f);
      recipe.prepend_exact(module, f);
    }
    if (comm.is_root())
      for (const auto& line : gguf_plan.fallbacks) log_info("gguf: ", line);
  }
  const TensorStore store = TensorStore::open(model_dir);
  {  // what the export stores, so that the AWQ family's searches score exactly that
    const DType model_dtype = store.get("model.embed_tokens.weight").dtype();
    const DType dense = model_dtype == DType::F16 || model_dtype == DType::BF16 ? model_dtype : DType::F32;
    switch (kind) {
      case ExportKind::Hdf5: break;  // F32 scales
      case ExportKind::Gguf: break;  // FP16 block scales, fitted by the format itself
      case ExportKind::FakeQuant: opt.numerics.weight_dtype = dense; break;
      case ExportKind::CompressedTensors: opt.numerics.scale_dtype = dense; break;
      default: opt.numerics.scale_dtype = DType::F16; break;  // GPTQ/AWQ containers: F16 scales
    }
  }
  CausalLM lm(std::move(spec), store, *backend);  // checks every tensor's shape
  std::optional<BpwPlan> bpw;  // --target-bpw: formats chosen once the output is opened
  if (vm.count("target-bpw"))
    bpw = bpw_plan_inputs(vm, kind, opt, mix.has_value(), bpw_formats, target_bpw, lm.spec(), recipe,
                          act, scattered);
  else if (vm.count("bpw-formats"))
    fail_input("--bpw-formats lists the candidates of --target-bpw: add --target-bpw B or drop it");
  {  // with a plan, --format's group size matters for no module: check as planned (any choice)
    Recipe checked = recipe;
    if (bpw) bpw->apply(checked);
    check_gguf_expert_formats(kind, lm.spec(), [&checked](const std::string& m) { return checked.format_for(m); });
    check_quantize_inputs(lm.spec(), store, checked, opt);
  }
  if (act != ActFormat::None)  // calibration sees what the quantized Linears will read
    lm.set_activation_quant([&recipe, act, lm_head = opt.quantize_lm_head](const std::string& m) {
      if (m == "lm_head" && !lm_head) return ActFormat::None;
      return recipe.format_for(m) ? act : ActFormat::None;
    });
  const auto stream = load_calibration_stream(model_dir, calib_path, comm);
  check_token_ids(stream, lm.spec().vocab_size, calib_path);
  const CalibrationSet set = make_calibration_windows(stream, calib);
  if (set.n_samples < comm.size())
    fail_input("--n-calib ", set.n_samples, ": fewer calibration windows than the ", comm.size(),
               " ranks (each rank needs at least one): use --n-calib ", comm.size(), " or more, or fewer ranks");
  const nlohmann::json plan =
      comm.is_root() ? quantize_plan(vm, model_dir, comm.size(), device) : nlohmann::json::object();

  std::unique_ptr<RunCheckpoint> checkpoint;
  // Declared after `checkpoint` and before the exporter: runs after the exporter is gone.
  const OutputCleanup cleanup(out_dir, checkpoint, comm.is_root());
  if (comm.is_root()) prepare_out_dir(out_dir, model_dir);
  checkpoint = RunCheckpoint::open(out_dir, plan, lm.spec().num_layers, vm.count("overwrite") > 0, comm);
  if (checkpoint->complete()) {
    if (comm.is_root())
      std::printf("%s is already complete (made by this same command): nothing to do\n", out_dir.c_str());
    return 0;
  }
  opt.checkpoint = checkpoint.get();
  if (bpw) {  // deterministic, so a resumed run plans the same again
    try {
      measure_and_choose(*bpw, lm, store, set, opt.batch_tokens, bpw_kld_windows, comm);
    } catch (const Stopped& s) {  // before any layer: nothing to resume
      throw Stopped(s.signal(), str_cat("stopped by ", signal_name(s.signal()), " while planning --target-bpw: "
                                        "nothing to keep yet: run the same command again to start"));
    }
    bpw->apply(recipe);
    log_info("--target-bpw ", target_bpw, ": ", bpw->bits(), " bits per weight planned over ",
             bpw->modules.size(), " modules");
  }
  log_info("model: ", model_dir, " (", lm.spec().describe(), ")");
  log_info("quantize: ", opt.method, " ", format.describe(),
           act != ActFormat::None ? std::string(" + ") + act_format_name(act) + " activations" : "",
           " -> ", export_kind_name(kind), " ", out_dir,
           "; calibration ", set.n_samples, " x ", set.seqlen, " tokens; ", comm.size(), " rank(s)");

  // Every rank exports; each writes the layers it owns (pipeline/layer_owner.h), an MoE
  // layer's routed experts their owners (pipeline/moe_experts.h). Every rank's exporter is
  // wrapped; rank 0 records the calls into OUT/.qshard (resume).
  comm.barrier();  // rank 0 has checked and made the output directory
  const LayerOwnership owners(lm.spec().num_layers, comm.size());
  const ExpertOwnership expert_owners(lm.spec().num_experts, comm.size());
  const WriteSplit split{&comm, [&](const std::string& t) {
                           const int64_t e = routed_expert_of(t);
                           return e >= 0 ? expert_owners.owner(e) : owners.owner_of_tensor(t);
                         }};
  std::unique_ptr<Exporter> exporter = make_exporter(kind, out_dir, uint64_t(max_shard_gb * 1e9), &split,
                                                      act);
  Exporter* const recorded = checkpoint->wrap(exporter.get());
  QuantizeReport report;
  try {
    report = quantize_model(lm, store, set, recipe, opt, recorded, comm);
  } catch (const Stopped& s) {  // every rank agreed on it (pipeline/quantize.cpp)
    const int64_t layers = lm.spec().num_layers, done = std::min(checkpoint->segments_done(), layers);
    throw Stopped(s.signal(), str_cat("stopped by ", signal_name(s.signal()), " at a safe point: ", done, " of ",
                                      layers, " layers are saved in ", out_dir,
                                      done > 0 ? "; run the same command again to resume"
                                               : "; nothing to keep yet: run the same command again to start"));
  }
  report.model_dir = model_dir;
  report.export_kind = export_kind_name(kind);
  if (comm.is_root()) {
    nlohmann::json rj = nlohmann::json::parse(report.to_json());
    if (bpw) rj["bpw_plan"] = bpw->to_json();
    std::ofstream(out_dir + "/quantize_report.json") << rj.dump(2) << "\n";
  }
  {
    ExportInfo info;
    info.source_model_dir = model_dir;
    info.method = opt.method;
    info.format = bpw ? bpw->main_format() : format;  // the base of quantization_config
    info.act_order = opt.gptq.act_order;
    info.static_groups = opt.gptq.static_groups;
    info.damp = opt.gptq.damp;
    info.true_sequential = opt.true_sequential;
    info.gguf_dense = gguf_dense;
    info.gguf_dense_types = gguf_plan.dense;
    if (mix) info.gguf_file_type = mix->file_type;
    for (const auto& m : report.modules)
      if (m.format == "skipped") info.ignored_modules.push_back(m.module);
    // MoE routers (and qwen2_moe's shared-expert gate) stay unquantized: engines must not
    // look for packed weights there.
    for (int64_t l = 0; l < lm.spec().num_layers; ++l)
      for (const DenseLinearSlot& d : dense_linears(lm.spec())) info.ignored_modules.push_back(lm.layer_tensor(l, d.name));
    if (!opt.quantize_lm_head) info.ignored_modules.push_back("lm_head");
    recorded->finish(info);  // collective; rank 0 finishes the directory
    checkpoint->mark_complete();
  }
  if (comm.is_root()) {
    report.print_table(stdout);
    if (bpw) bpw->print_table(stdout);
    std::printf("wrote %s (%s)\n", out_dir.c_str(), export_kind_name(kind));
    std::fflush(stdout);
  }
  comm.barrier();
  return 0;
}

}  // namespace qshard::cli
