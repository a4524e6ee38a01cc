#include "dist/hdf5_mpio.h"

#include <hdf5.h>
#include <mpi.h>

#include "core/error.h"

namespace qshard {

namespace {

void check_h5(int64_t rc, const char* stmt, const char* file, int line, const Communicator& c) {
  if (rc < 0) fail("HDF5 call ", stmt, " failed at ", file, ":", line, " on ", c.where());
}
#define QS_H5P(call) check_h5(int64_t(call), #call, __FILE__, __LINE__, comm)

}  // namespace

std::shared_ptr<const H5Parallel> mpio_access(Communicator& comm) {
  if (comm.size() == 1) return nullptr;
  const MPI_Comm mpi = *static_cast<MPI_Comm*>(comm.mpi_comm_handle());
  auto par = std::make_shared<H5Parallel>();
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  QS_H5P(fapl);
  par->fapl = H5Handle(fapl, H5Pclose);
  QS_H5P(H5Pset_fapl_mpio(fapl, mpi, MPI_INFO_NULL));
  // Metadata reads and writes collective too: every rank makes the same structural
  // calls anyway, and it keeps rank 0 from serving everybody's metadata reads.
  QS_H5P(H5Pset_all_coll_metadata_ops(fapl, true));
  QS_H5P(H5Pset_coll_metadata_write(fapl, true));
  const hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  QS_H5P(dxpl);
  par->dxpl = H5Handle(dxpl, H5Pclose);
  QS_H5P(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE));
  return par;
}

}  // namespace qshard
