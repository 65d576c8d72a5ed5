// `vmfactory run`: get a VM, run one command in it, stream its output.
#pragma once

#include <string>
#include <vector>

#include "common/cancel.h"
#include "daemon/acquire.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf {

// Where the VM comes from (AcquireOptions), and what runs in it.
struct RunOptions : AcquireOptions {
  std::vector<std::string> command;
  int timeout_s = 0;  // 0: none
  // A directory tree to run the command in, as an OCI container (its own
  // namespaces and root) on a copy of the tree; "": in the VM itself.
  std::string rootfs;
};

// Returns the process exit status to use: the command's, or 124 on timeout,
// 125 when the VM could not be had, 127 when the command does not exist,
// 128+N when interrupted by signal N.
int RunCommand(const RunOptions& opts, CancelToken* cancel, const int* signal_seen);

}  // namespace vmf
