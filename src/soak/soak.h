// `vmfactory soak`: a long run of GetVM / exec / stop cycles through a real
// daemon, with faults mixed in, that ends by checking that nothing leaked.
//
// Everything lives in a private work dir: a template, the daemon's runtime
// dir and socket, its log. Faults (each cycle has --fault-rate odds of one):
//   qemu-exec, proxy-exec        SIGKILL during a command in a handed-out VM
//   qemu-hotplug, proxy-hotplug  SIGKILL at the hotplug fail point of a VM we hold
//   qemu-pooled, proxy-pooled    SIGKILL of a VM waiting in the pool
//   daemon                       SIGKILL of the daemon while we hold a VM, restart
//   owner-exit                   a client takes a VM and exits without stopping it
// and inside the daemon, VMF_FAILPOINTS kills clones at restore while the
// pool refills. A cycle without a fault must succeed; one with a fault must
// fail with a clear error (or, for faults that do not touch the VM we use,
// succeed). At the end, with the pool full again, the census (QEMU, proxies,
// sockets, VM dirs, mounts, the daemon's fds) must equal the one at the
// start, every VM id handed out must have been new, and after the daemon
// exits nothing of it may be left.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/cancel.h"
#include "vm/config.h"

namespace vmf {

struct SoakOptions {
  VMConfig config;  // kernel, initrd and size of the VMs
  int duration_s = 60;
  double fault_rate = 0.25;  // share of cycles with a fault
  int pool = 2;
  uint64_t seed = 0;  // 0: random
  std::string json_path;
  std::vector<std::string> command_line;
};

// Returns the process exit code: 0 if no unexpected failure and no leak.
int RunSoak(const SoakOptions& options, CancelToken* cancel);

}  // namespace vmf
