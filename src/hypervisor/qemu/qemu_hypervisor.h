// The QEMU backend: a qemu-system-x86_64 process per VM, driven over QMP,
// with the guest's agent port and console on unix sockets in the VM dir.
// KVM where /dev/kvm can run guests, TCG otherwise (config: qemu.accel).
#pragma once

#include <string>
#include <vector>

#include "hypervisor/hypervisor.h"

namespace vmf {

// The one QEMU backend (stateless).
HypervisorBackend& QemuBackend();

namespace qmp {
class QmpClient;
}

struct QemuArgvOptions {
  bool use_kvm = false;
};

// The QEMU command line for a config (exposed for tests and `-v` output).
std::vector<std::string> QemuArgv(const std::string& id, const HypervisorConfig& config,
                                  const std::string& dir, const QemuArgvOptions& options);

// The QMP client of a started QEMU hypervisor (for what only QEMU does, such
// as the bench's savevm); null if `h` is not one or is not connected.
qmp::QmpClient* QemuQmp(Hypervisor& h);

// Whether a QEMU of this config would use KVM (qemu.accel, and KvmUsable()).
bool QemuUsesKvm(const HypervisorConfig& config);

// Whether KVM can run guests here (device present, usable, and the CPU has VMX/SVM).
bool KvmUsable();

}  // namespace vmf
