// qshard quantize: calibrate, quantize layer by layer, export, report.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "cli/device.h"
#include "cli/options.h"
#include "cli/quantize_plan.h"
#include "core/error.h"
#include "core/log.h"
#include "export/exporter.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "pipeline/quantize.h"

namespace qshard::cli {

namespace {

constexpr const char* kUsage =
    "usage: qshard quantize --model DIR --out DIR --calib FILE [--method gptq|rtn]\n"
    "                       [--format int4] [--group-size 128] [--sym|--asym] [--act-order]\n"
    "                       [--static-groups] [--damp 0.01] [--n-calib 128] [--calib-seqlen 2048]\n"
    "                       [--export gptq|compressed-tensors|fakequant|hdf5] [--skip REGEX]...\n\n"
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
    "16, fp32 tensor scale). Exports: gptq (int2/3/4/8), compressed-tensors (int), fakequant\n"
    "(dequantized dense weights, any format), hdf5 (codes, scales, zeros, g_idx per module).\n"
    "Calibration: a text file (tokenized with the model's tokenizer, [BOS] first) or a token\n"
    "file (*.tokens / *.bin, little-endian int32); --n-calib windows of --calib-seqlen\n"
    "tokens, consecutive from the start unless --calib-shuffle SEED.\n"
    "Recipe file (--recipe): {\"rules\": [{\"match\": REGEX, \"skip\": true} or\n"
    "{\"match\": REGEX, \"format\": \"int8\", \"group_size\": 128, \"sym\": true}]}; the last\n"
    "matching rule wins; --skip REGEX rules apply after the recipe.\n"
    "Resume: OUT/.qshard/ records every finished layer; if the run is killed, the same\n"
    "command again continues at the first unfinished layer and writes the same bytes. A\n"
    "different command on that OUT is refused (naming the difference) unless --overwrite.";

std::vector<int32_t> load_calibration_stream(const std::string& model_dir, const std::string& path,
                                             Communicator& comm) {
  std::vector<int32_t> stream;
  int64_t n = 0;
  if (comm.is_root()) {
    if (is_token_file(path)) {
      stream = read_token_file(path);
    } else {
      const auto tok = Tokenizer::load(model_dir);
      const std::string text = read_text_file(path);
      if (tok->bos_id() >= 0) stream.push_back(tok->bos_id());
      const auto ids = tok->encode(text);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    n = int64_t(stream.size());
  }
  comm.broadcast(&n, sizeof n, 0);
  stream.resize(size_t(n));
  comm.broadcast(stream.data(), n * int64_t(sizeof(int32_t)), 0);
  return stream;
}

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

}  // namespace

int run_quantize(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string model_dir, out_dir, calib_path, format_name = "int4", export_name = "gptq", recipe_path;
  int64_t group_size = 0;
  std::string block_gptq, device_name = "auto";
  uint64_t shuffle_seed = 0;
  double max_shard_gb = 5.0;
  std::vector<std::string> skips;
  QuantizeOptions opt;
  CalibrationOptions calib;
  desc.add_options()
      ("model", po::value(&model_dir)->required(), "Hugging Face model directory (bf16/f16/f32 weights)")
      ("out", po::value(&out_dir)->required(), "output directory (must not hold a finished checkpoint)")
      ("calib", po::value(&calib_path)->required(), "calibration text file, or token file (*.tokens, *.bin)")
      ("method", po::value(&opt.method)->default_value("gptq"), "gptq or rtn")
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
      ("export", po::value(&export_name)->default_value("gptq"), "gptq, compressed-tensors, fakequant, hdf5")
      ("skip", po::value(&skips)->composing(), "leave modules matching this regex unquantized (repeatable)")
      ("recipe", po::value(&recipe_path), "JSON recipe of per-module rules (see above)")
      ("quantize-lm-head", "quantize lm_head too (in row chunks)")
      ("no-true-sequential", "collect every group's Hessian from the unquantized layer (one pass)")
      ("batch-tokens", po::value(&opt.batch_tokens)->default_value(2048), "calibration tokens per forward")
      ("max-shard-size", po::value(&max_shard_gb)->default_value(5.0), "output shard size limit in GB")
      ("device", po::value(&device_name)->default_value("auto"), "cpu, cuda, or auto (cuda when a GPU and the CUDA backend exist)")
      ("overwrite", "discard an unfinished or finished run of a different command in --out")
      ("quiet", "no progress on stderr");
  po::variables_map vm;
  if (!parse_options(args, kUsage, desc, vm, comm.is_root())) return 0;
  if (vm.count("quiet")) log_set_level(LogLevel::Quiet);
  if (vm.count("sym") && vm.count("asym")) fail_input("--sym and --asym exclude each other");
  opt.gptq.act_order = vm.count("act-order") > 0;
  opt.gptq.static_groups = vm.count("static-groups") > 0;
  opt.quantize_lm_head = vm.count("quantize-lm-head") > 0;
  opt.true_sequential = vm.count("no-true-sequential") == 0;
  opt.clip.enabled = opt.gptq.clip.enabled = vm.count("mse-clip") > 0;
  if (vm.count("calib-shuffle")) calib.shuffle_seed = shuffle_seed;
  if (block_gptq == "microblock")
    opt.gptq.block_gptq = BlockGptq::Microblock;
  else if (block_gptq != "columnwise")
    fail_input("--block-gptq ", block_gptq, " is not one of columnwise, microblock");
  calib.path = calib_path;
  if (opt.method != "gptq" && opt.method != "rtn")
    fail_input("--method ", opt.method, " is not supported (gptq, rtn)");
  if (opt.gptq.damp < 0) fail_input("--damp must not be negative");
  if (opt.gptq.block_size < 1) fail_input("--block-size must be positive");
  if (opt.batch_tokens < 1) fail_input("--batch-tokens must be positive");

  const QuantFormat format = QuantFormat::parse(format_name, group_size, vm.count("asym") == 0);
  const ExportKind kind = parse_export_kind(export_name);
  check_export_supports(kind, format, opt.gptq.act_order);
  Recipe recipe(format);
  if (!recipe_path.empty()) recipe.load_file(recipe_path);
  for (const auto& s : skips) recipe.add_skip(s);
  for (const auto& r : recipe.rules())
    if (r.format) check_export_supports(kind, *r.format, opt.gptq.act_order);

  const std::string device = resolve_device(device_name);
  if (comm.is_root()) prepare_out_dir(out_dir, model_dir);
  ModelSpec spec = ModelSpec::load(model_dir);
  const TensorStore store = TensorStore::open(model_dir);
  const nlohmann::json plan =
      comm.is_root() ? quantize_plan(vm, model_dir, comm.size(), device) : nlohmann::json::object();
  const auto checkpoint = RunCheckpoint::open(out_dir, plan, spec.num_layers, vm.count("overwrite") > 0, comm);
  if (checkpoint->complete()) {
    if (comm.is_root())
      std::printf("%s is already complete (made by this same command): nothing to do\n", out_dir.c_str());
    return 0;
  }
  opt.checkpoint = checkpoint.get();
  auto backend = make_backend(device);
  CausalLM lm(std::move(spec), store, *backend);
  const auto stream = load_calibration_stream(model_dir, calib_path, comm);
  check_token_ids(stream, lm.spec().vocab_size, calib_path);
  const CalibrationSet set = make_calibration_windows(stream, calib);
  if (set.n_samples < comm.size())
    fail_input("--n-calib ", set.n_samples, ": fewer calibration windows than the ", comm.size(),
               " ranks (each rank needs at least one): use --n-calib ", comm.size(), " or more, or fewer ranks");
  log_info("model: ", model_dir, " (", lm.spec().describe(), ")");
  log_info("quantize: ", opt.method, " ", format.describe(), " -> ", export_kind_name(kind), " ", out_dir,
           "; calibration ", set.n_samples, " x ", set.seqlen, " tokens; ", comm.size(), " rank(s)");

  std::unique_ptr<Exporter> exporter;
  if (comm.is_root()) exporter = make_exporter(kind, out_dir, uint64_t(max_shard_gb * 1e9));
  Exporter* const recorded = checkpoint->wrap(exporter.get());  // tees into OUT/.qshard
  QuantizeReport report = quantize_model(lm, store, set, recipe, opt, recorded, comm);
  report.model_dir = model_dir;
  report.export_kind = export_kind_name(kind);
  if (comm.is_root()) {
    std::ofstream(out_dir + "/quantize_report.json") << report.to_json() << "\n";
    ExportInfo info;
    info.source_model_dir = model_dir;
    info.method = opt.method;
    info.format = format;
    info.act_order = opt.gptq.act_order;
    info.static_groups = opt.gptq.static_groups;
    info.damp = opt.gptq.damp;
    info.true_sequential = opt.true_sequential;
    for (const auto& m : report.modules)
      if (m.format == "skipped") info.ignored_modules.push_back(m.module);
    if (!opt.quantize_lm_head) info.ignored_modules.push_back("lm_head");
    recorded->finish(info);
    checkpoint->mark_complete();
    report.print_table(stdout);
    std::printf("wrote %s (%s)\n", out_dir.c_str(), export_kind_name(kind));
    std::fflush(stdout);
  }
  comm.barrier();
  return 0;
}

}  // namespace qshard::cli
