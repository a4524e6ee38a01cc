// --device cpu|cuda|auto for the commands that compute: which backend runs the model.
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"

namespace qshard::cli {

// "cpu" or "cuda" for --device NAME; InputError for an unknown name, or for cuda on a
// build without CUDA or a machine without a visible GPU. auto: cuda when both exist.
std::string resolve_device(const std::string& name);

// The backend for a resolved device.
std::unique_ptr<Backend> make_backend(const std::string& device);

}  // namespace qshard::cli
