// VMConfig: everything a new VM needs, with validation that names the field.
#pragma once

#include <cstdint>
#include <string>

#include "common/clock.h"
#include "common/status.h"

namespace vmf {

enum class Accel { kAuto, kKvm, kTcg };

struct HypervisorConfig {
  std::string qemu_path = "qemu-system-x86_64";  // absolute, or looked up in PATH
  std::string kernel;                            // guest kernel image
  std::string initrd;                            // guest initramfs (agent as /init)
  std::string machine = "q35";
  std::string kernel_params;  // appended to the built-in command line
  Accel accel = Accel::kAuto;
  uint32_t vcpus = 1;
  uint32_t max_vcpus = 4;  // hotplug ceiling
  uint32_t memory_mib = 256;
  uint32_t memory_slots = 4;  // DIMM slots for memory hotplug
  uint32_t max_memory_mib = 2048;

  // Templating (see the template factory): a VM booted to become a template
  // keeps its RAM in a shared file; a clone maps that file privately and
  // restores the saved device state instead of booting.
  bool boot_to_be_template = false;
  bool boot_from_template = false;
  std::string memory_path;        // RAM file of the template
  std::string device_state_path;  // saved device state of the template
};

struct AgentConfig {
  Duration boot_timeout = std::chrono::seconds(90);  // until the agent first answers
  Duration call_timeout = std::chrono::seconds(30);  // default per agent call
};

struct ProxyConfig {
  std::string path;  // vmfactory-proxy binary; empty: next to our binary
};

struct VMConfig {
  HypervisorConfig hypervisor;
  AgentConfig agent;
  ProxyConfig proxy;
  std::string runtime_dir;  // empty: DefaultRuntimeDir()

  // Checks every field; the error names the first bad one and why.
  Status Validate() const;
};

// Raises the hotplug ceilings (max_vcpus, max_memory_mib) to the size asked
// when the size is above them, so that a big request is not refused.
void FitCeilings(HypervisorConfig* h);

// $VMF_RUNTIME_DIR if set, else /run/vmfactory as root, $XDG_RUNTIME_DIR/vmfactory otherwise, else /tmp/vmfactory-UID.
std::string DefaultRuntimeDir();
// The config with the built-in guest image (build/guest) and tools filled in.
VMConfig DefaultVMConfig();
// Resolves a program name through PATH; empty if not found.
std::string FindProgram(const std::string& name);
// Whether KVM can run guests here (device present, usable, and the CPU has VMX/SVM).
bool KvmUsable();

}  // namespace vmf
