// `vmfactory run`: get a VM, run one command in it, stream its output.
#pragma once

#include <string>
#include <vector>

#include "common/cancel.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf {

struct RunOptions {
  VMConfig config;
  std::vector<std::string> command;
  int timeout_s = 0;  // 0: none
  bool verbose = false;
  bool cold = false;          // never use the template
  std::string template_root;  // where the template is looked for
  std::string daemon_socket;  // "" = the default; used when a daemon listens there
};

// A VM for `run`: from a running daemon, else the template, else a cold boot
// (only a cold boot with opts.cold).
Result<std::unique_ptr<VM>> AcquireVM(const RunOptions& opts, StepTimes* steps, CancelToken* cancel);

// Returns the process exit status to use: the command's, or 124 on timeout,
// 125 when the VM could not be had, 127 when the command does not exist,
// 128+N when interrupted by signal N.
int RunCommand(const RunOptions& opts, CancelToken* cancel, const int* signal_seen);

}  // namespace vmf
