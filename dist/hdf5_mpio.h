// Parallel HDF5 over the world communicator: the one place where MPI meets HDF5.
#pragma once

#include <memory>

#include "dist/communicator.h"
#include "io/hdf5_file.h"

namespace qshard {

// File access with the MPI-IO driver on `comm` and collective transfers (hpc.md).
// Null for a world of one rank: the serial driver is simpler and as fast there.
std::shared_ptr<const H5Parallel> mpio_access(Communicator& comm);

}  // namespace qshard
