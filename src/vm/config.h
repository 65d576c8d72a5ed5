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

struct VMConfig {
  HypervisorConfig hypervisor;
  AgentConfig agent;
  ProxyConfig proxy;
  SecurityConfig security;
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
