// HypervisorConfig: what a VM is made of, as every backend understands it
// (kernel, initrd, size, hotplug ceilings, how it boots), plus one section
// of options per backend ([hypervisor.qemu] in config.toml).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/jail.h"
#include "common/status.h"

namespace vmf {

enum class Accel { kAuto, kKvm, kTcg };

// How a VM comes up.
enum class BootMode {
  kCold,            // boots its kernel
  kTemplateSource,  // boots its kernel with RAM in a shared file, to be saved as a template
  kClone,           // maps a template's RAM file privately and restores its device state
};

// [hypervisor.qemu]: options only the QEMU backend reads.
struct QemuOptions {
  std::string path = "qemu-system-x86_64";  // absolute, or looked up in PATH
  std::string machine = "q35";
  Accel accel = Accel::kAuto;
  uint32_t memory_slots = 4;  // DIMM slots for memory hotplug
  // PCIe root ports for disks added while the VM runs (a container's rootfs):
  // on q35 a device can only be hot-added into a port that the VM, and so
  // the template, was started with.
  uint32_t disk_slots = 6;
  // Appended to the command line as they are (the bench's raw-QEMU
  // baselines: a -drive for a snapshot disk, -loadvm); not in config.toml.
  std::vector<std::string> extra_args;
};

// How a VM's processes are confined: resolved for each VM when it is made
// (VM::Create, from [security]), never read from config.toml.
struct VmConfinement {
  bool jail = false;     // namespaces and a root of its own (needs root)
  bool sandbox = false;  // the VMM's own system call filter (QEMU: -sandbox)
  bool change_ids = false;
  uint32_t uid = 0;  // the VM's identity when change_ids
  uint32_t gid = 0;
  // A preload library that opens the listed files read-only where the VMM
  // asks for read-write: a clone maps the template's RAM file privately, so
  // it never needs to write it (QEMU 7.2 opens it O_RDWR all the same).
  std::string readonly_open_lib;
};

// The start of a VM process's Confinement (the VMM's or the proxy's): its
// identity and, with v.jail, new mount, PID, IPC, UTS and network
// namespaces and an empty jail root at dir/.root (made here, 0700), to
// which the caller adds what the process needs with a JailBuilder.
Result<Confinement> VmProcessConfinement(const VmConfinement& v, const std::string& dir);

struct HypervisorConfig {
  std::string backend = "qemu";  // which HypervisorBackend (hypervisor/backends.h)
  std::string kernel;            // guest kernel image
  std::string initrd;            // guest initramfs (agent as /init)
  std::string kernel_params;     // appended to the backend's built-in command line
  uint32_t vcpus = 1;
  uint32_t max_vcpus = 4;  // hotplug ceiling
  uint32_t memory_mib = 256;
  uint32_t max_memory_mib = 2048;

  // Templating (see the template factory).
  BootMode boot = BootMode::kCold;
  std::string memory_path;        // RAM file of the template
  std::string device_state_path;  // saved device state of the template

  QemuOptions qemu;
  VmConfinement confinement;

  // Runtime only (never in a file): the cgroup.procs fds of the VM's cgroup,
  // which the VM process joins before it execs (SpawnOptions).
  std::vector<int> cgroup_procs_fds;
};

// Checks the fields every backend shares; the error names the field.
Status ValidateCommon(const HypervisorConfig& h);

// Raises the hotplug ceilings (max_vcpus, max_memory_mib) to the size asked
// when the size is above them, so that a big request is not refused.
void FitCeilings(HypervisorConfig* h);

}  // namespace vmf
