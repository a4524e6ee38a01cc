// Deterministic crash points for the resume tests: a run killed "at any moment" is
// tested by killing it at named moments. Inert unless the environment asks:
//   QSHARD_TEST_KILL_AT=NAME   raise SIGKILL when the run reaches NAME
//   QSHARD_TEST_PAUSE_AT=NAME  print "qshard: paused at NAME pid P" and wait to be killed
//   QSHARD_TEST_SIGNAL_AT=NAME raise SIGTERM when the run reaches NAME (a clean stop)
//   QSHARD_TEST_KILL_RANK=R    only on this MPI rank (OMPI_COMM_WORLD_RANK / PMI_RANK)
//   QSHARD_TEST_LAYER_SECONDS=S  every rank waits S seconds at each "layer-N" only (slow layers
//                              for signal and time-limit tests; a stop request ends the wait)
// Names: "layer-N" (segment N committed to the manifest), "layer-N-file" (its file
// written, manifest not yet updated), "export" (final shards renamed, config.json not yet
// written), "finished" (export complete, manifest not yet marked complete),
// "layer-N-GROUP" (GROUP of layer N quantized, e.g. "layer-1-gate_up[expert 2]": mid-layer).
#pragma once

#include <string>

namespace qshard {

void test_kill_point(const std::string& name);

}  // namespace qshard
