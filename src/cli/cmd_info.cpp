// qshard info: what a model directory holds, or what this build can do.
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "kernels/backend.h"
#include "kernels/cpu/blas_core.h"
#include "model/model_spec.h"
#ifdef QSHARD_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

namespace qshard::cli {

int run_info(const std::vector<std::string>& args, Communicator& comm) {
  po::options_description desc("options");
  std::string model_dir;
  desc.add_options()("model", po::value(&model_dir), "Hugging Face model directory to describe");
  po::variables_map vm;
  if (!parse_options(args, "usage: qshard info [--model DIR]\n\nWithout --model: this build's "
                     "version, backends and rank count.", desc, vm, comm.is_root()))
    return 0;
  if (!comm.is_root()) return 0;
  if (model_dir.empty()) {
    std::printf("qshard %s\nranks: %d\nbackends: cpu", QSHARD_VERSION, comm.size());
#ifdef QSHARD_HAVE_CUDA
    std::printf(", cuda\ngpus: %s\n", cuda_describe().c_str());
#else
    std::printf(" (built without CUDA)\n");
#endif
    std::printf("blas: %s\n", cpu::blas_describe().c_str());
    return 0;
  }
  const ModelSpec spec = ModelSpec::load(model_dir);
  const TensorStore store = TensorStore::open(model_dir);
  std::printf("%s\n", spec.describe().c_str());
  int64_t params = 0;
  for (const auto& name : store.names()) params += shape_numel(store.shape(name));
  std::printf("tensors: %zu, parameters: %lld\n", store.names().size(), (long long)params);
  try {
    std::printf("tokenizer: %s\n", Tokenizer::load(model_dir)->describe().c_str());
  } catch (const Error& e) {
    std::printf("tokenizer: none usable (%s)\n", e.what());
  }
  return 0;
}

}  // namespace qshard::cli
