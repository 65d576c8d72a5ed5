// VMConfig: everything a new VM needs, with validation that names the field.
#pragma once

#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "hypervisor/config.h"

namespace vmf {

class HypervisorBackend;

struct AgentConfig {
  Duration boot_timeout = std::chrono::seconds(90);  // until the agent first answers
  Duration call_timeout = std::chrono::seconds(30);  // default per agent call
  // A long-lived user of a VM (the containerd shim) ends a VM whose agent
  // has not answered a health check for this long (0: never checks).
  Duration health_timeout = std::chrono::seconds(30);
};

struct ProxyConfig {
  std::string path;  // vmfactory-proxy binary; empty: next to our binary
};

// [security]: every VM's processes run confined unless `confine` is off.
// As root each VM gets a uid (and gid) of its own from the range, a jail and
// seccomp; as another user the VMs run as that user, with seccomp.
inline constexpr uint32_t kDefaultUidFirst = 0x70000000;  // 1879048192
inline constexpr uint32_t kDefaultUidCount = 65536;
struct SecurityConfig {
  bool confine = true;
  uint32_t uid_first = kDefaultUidFirst;
  uint32_t uid_count = kDefaultUidCount;
  std::string readonly_open_lib;  // empty: beside our binaries (DefaultVMConfig)
};

// [limits]: the VM's processes (QEMU and its proxy) in a cgroup of their own
// (common/cgroup.h). Memory: the guest's memory (raised as it grows by
// hotplug) plus memory_overhead_mib for QEMU itself, no swap. CPU: one core
// per vCPU plus one for QEMU's own threads and the proxy. Tasks: pids_max.
// A VM over its memory limit is killed, and its errors say so.
inline constexpr uint32_t kMaxMemoryOverheadMib = 1 << 20;
inline constexpr uint32_t kMinPidsMax = 16;  // QEMU alone has a handful of threads
inline constexpr uint32_t kMaxPidsMax = 1 << 22;

struct ResourceLimitsConfig {
  bool enabled = true;
  // Without a cgroup hierarchy we may use (not root, read-only sysfs, v2
  // without the controllers delegated), a VM runs without limits (logged)
  // unless they are required: then it is not created.
  bool required = false;
  uint32_t memory_overhead_mib = 256;
  uint32_t pids_max = 256;
};

struct VMConfig {
  HypervisorConfig hypervisor;
  AgentConfig agent;
  ProxyConfig proxy;
  SecurityConfig security;
  ResourceLimitsConfig limits;
  std::string runtime_dir;  // empty: DefaultRuntimeDir()

  // Checks every field; the error names the first bad one and why. The
  // hypervisor's own options are checked by `backend` (default: the one
  // hypervisor.backend names).
  Status Validate(const HypervisorBackend* backend = nullptr) const;
};

// $VMF_RUNTIME_DIR if set, else /run/vmfactory as root, $XDG_RUNTIME_DIR/vmfactory otherwise, else
// /tmp/vmfactory-UID.
std::string DefaultRuntimeDir();
// $VMF_GUEST_DIR, else the guest image beside our binaries (BIN/../guest in
// a build tree, BIN/../share/vmfactory/guest when installed).
std::string DefaultGuestDir();
// The config with the default guest image and the proxy beside our binary.
VMConfig DefaultVMConfig();
// Where a VM's uid leases are kept: RUNTIME/uids.
std::string UidLeaseDir(const std::string& runtime_dir);
}  // namespace vmf
