// What the CUDA runtime sees; safe to call on a machine without a GPU.
#pragma once

#include <string>

namespace qshard {

// "runtime 13.0, 1 device(s): NVIDIA H100 ..." or "runtime 13.0, no usable device (...)".
std::string cuda_describe();

}  // namespace qshard
