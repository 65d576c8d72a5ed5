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

struct VMConfig {
  HypervisorConfig hypervisor;
  AgentConfig agent;
  ProxyConfig proxy;
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
}  // namespace vmf
