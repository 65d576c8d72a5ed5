#include "vm/config.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "common/uid_lease.h"
#include "hypervisor/backends.h"

namespace vmf {
namespace {

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : exe.parent_path().string();
}

}  // namespace

std::string DefaultRuntimeDir() {
  if (const char* d = std::getenv("VMF_RUNTIME_DIR"); d && *d) return d;
  if (::geteuid() == 0) return "/run/vmfactory";
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/vmfactory";
  return "/tmp/vmfactory-" + std::to_string(::geteuid());
}

std::string DefaultGuestDir() {
  if (const char* g = std::getenv("VMF_GUEST_DIR"); g && *g) return g;
  // Beside the binaries: build/bin/../guest in a build tree, PREFIX/bin/../
  // share/vmfactory/guest when installed.
  const std::string self = SelfDir();
  for (const std::string& dir : {self + "/../guest", self + "/../share/vmfactory/guest"}) {
    if (::access((dir + "/vmlinuz").c_str(), R_OK) == 0) {
      return std::filesystem::path(dir).lexically_normal().string();
    }
  }
  return std::filesystem::path(self + "/../guest").lexically_normal().string();
}

VMConfig DefaultVMConfig() {
  VMConfig c;
  const std::string guest = DefaultGuestDir();
  c.hypervisor.kernel = guest + "/vmlinuz";
  c.hypervisor.initrd = guest + "/initramfs.cpio";
  c.proxy.path = SelfDir() + "/vmfactory-proxy";
  // build/bin/../lib/vmfactory in a build tree, PREFIX/lib/vmfactory when installed.
  c.security.readonly_open_lib =
      std::filesystem::path(SelfDir() + "/../lib/vmfactory/libvmf-readonly-open.so")
          .lexically_normal()
          .string();
  if (const char* a = std::getenv("VMF_ACCEL")) {
    std::string s = a;
    if (s == "kvm") c.hypervisor.qemu.accel = Accel::kKvm;
    if (s == "tcg") c.hypervisor.qemu.accel = Accel::kTcg;
  }
  return c;
}

Status VMConfig::Validate(const HypervisorBackend* backend) const {
  if (!backend) {
    VMF_ASSIGN_OR_RETURN(backend, BackendNamed(hypervisor.backend));
  }
  VMF_RETURN_IF_ERROR(backend->Validate(hypervisor));
  VMF_RETURN_IF_ERROR(ValidateCommon(hypervisor));
  if (agent.boot_timeout.count() <= 0) return InvalidArgument("agent.boot_timeout: must be positive");
  if (agent.call_timeout.count() <= 0) return InvalidArgument("agent.call_timeout: must be positive");
  if (proxy.path.empty() || ::access(proxy.path.c_str(), X_OK) != 0) {
    return NotFound("proxy.path: '" + proxy.path + "' is not an executable");
  }
  if (security.confine) {
    VMF_RETURN_IF_ERROR(CheckUidRange(security.uid_first, security.uid_count));
    if (!security.readonly_open_lib.empty() && ::access(security.readonly_open_lib.c_str(), R_OK) != 0) {
      return NotFound("security.readonly_open_lib: '" + security.readonly_open_lib +
                      "' is not readable (it is built and installed with vmfactory)");
    }
  }
  if (limits.memory_overhead_mib > kMaxMemoryOverheadMib) {
    return InvalidArgument("limits.memory_overhead_mib: at most " + std::to_string(kMaxMemoryOverheadMib) +
                           ", got " + std::to_string(limits.memory_overhead_mib));
  }
  if (limits.pids_max < kMinPidsMax || limits.pids_max > kMaxPidsMax) {
    return InvalidArgument("limits.pids_max: must be between " + std::to_string(kMinPidsMax) + " and " +
                           std::to_string(kMaxPidsMax) + ", got " + std::to_string(limits.pids_max));
  }
  if (!runtime_dir.empty() && runtime_dir[0] != '/') {
    return InvalidArgument("runtime_dir: '" + runtime_dir + "' is not an absolute path");
  }
  return OkStatus();
}

std::string UidLeaseDir(const std::string& runtime_dir) { return runtime_dir + "/uids"; }

}  // namespace vmf
