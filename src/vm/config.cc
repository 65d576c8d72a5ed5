#include "vm/config.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "common/fd.h"
#include "common/io.h"

namespace vmf {
namespace {

Status CheckReadableFile(const std::string& field, const std::string& path) {
  if (path.empty()) return InvalidArgument(field + ": no path given");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, field + ": " + path);
  if (!S_ISREG(st.st_mode)) return InvalidArgument(field + ": " + path + " is not a regular file");
  if (st.st_size == 0) return InvalidArgument(field + ": " + path + " is empty");
  if (::access(path.c_str(), R_OK) != 0) return ErrnoStatus(errno, field + ": " + path);
  return OkStatus();
}

std::string SelfDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "" : exe.parent_path().string();
}

}  // namespace

std::string FindProgram(const std::string& name) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty()) {
      std::string cand = dir + "/" + name;
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
    start = end + 1;
  }
  return "";
}

bool KvmUsable() {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return false;
  if (::ioctl(kvm.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return false;
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) return false;
  // Some sandboxes expose a /dev/kvm that creates VMs but cannot run a
  // real CPU model; hardware virtualisation shows in the CPU flags.
  auto cpuinfo = ReadFile("/proc/cpuinfo", 16 << 20);
  if (!cpuinfo.ok()) return false;
  return cpuinfo->find(" vmx") != std::string::npos || cpuinfo->find(" svm") != std::string::npos;
}

void FitCeilings(HypervisorConfig* h) {
  h->max_vcpus = std::max(h->max_vcpus, h->vcpus);
  h->max_memory_mib = std::max(h->max_memory_mib, h->memory_mib);
}

std::string DefaultRuntimeDir() {
  if (const char* d = std::getenv("VMF_RUNTIME_DIR"); d && *d) return d;
  if (::geteuid() == 0) return "/run/vmfactory";
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/vmfactory";
  return "/tmp/vmfactory-" + std::to_string(::geteuid());
}

VMConfig DefaultVMConfig() {
  VMConfig c;
  std::string guest = VMF_DEFAULT_GUEST_DIR;
  if (const char* g = std::getenv("VMF_GUEST_DIR"); g && *g) guest = g;
  c.hypervisor.kernel = guest + "/vmlinuz";
  c.hypervisor.initrd = guest + "/initramfs.cpio";
  std::string proxy = SelfDir() + "/vmfactory-proxy";
  if (::access(proxy.c_str(), X_OK) != 0) proxy = std::string(VMF_DEFAULT_BIN_DIR) + "/vmfactory-proxy";
  c.proxy.path = proxy;
  if (const char* a = std::getenv("VMF_ACCEL")) {
    std::string s = a;
    if (s == "kvm") c.hypervisor.accel = Accel::kKvm;
    if (s == "tcg") c.hypervisor.accel = Accel::kTcg;
  }
  return c;
}

Status VMConfig::Validate() const {
  const auto& h = hypervisor;
  if (FindProgram(h.qemu_path).empty()) {
    return NotFound("hypervisor.qemu_path: '" + h.qemu_path +
                    "' is not an executable (install qemu-system-x86)");
  }
  VMF_RETURN_IF_ERROR(CheckReadableFile("hypervisor.kernel", h.kernel));
  VMF_RETURN_IF_ERROR(CheckReadableFile("hypervisor.initrd", h.initrd));
  if (h.machine != "q35" && h.machine != "pc") {
    return InvalidArgument("hypervisor.machine: '" + h.machine + "' is not supported (q35 or pc)");
  }
  if (h.vcpus < 1) return InvalidArgument("hypervisor.vcpus: must be at least 1");
  if (h.max_vcpus < h.vcpus) {
    return InvalidArgument("hypervisor.max_vcpus: " + std::to_string(h.max_vcpus) +
                           " is below hypervisor.vcpus " + std::to_string(h.vcpus));
  }
  if (h.max_vcpus > 240) return InvalidArgument("hypervisor.max_vcpus: at most 240");
  if (h.memory_mib < 64) {
    return InvalidArgument("hypervisor.memory_mib: " + std::to_string(h.memory_mib) +
                           " is below the minimum of 64");
  }
  if (h.max_memory_mib < h.memory_mib) {
    return InvalidArgument("hypervisor.max_memory_mib: " + std::to_string(h.max_memory_mib) +
                           " is below hypervisor.memory_mib " + std::to_string(h.memory_mib));
  }
  if (h.max_memory_mib > (1u << 20)) return InvalidArgument("hypervisor.max_memory_mib: at most 1 TiB");
  if (h.memory_slots > 256) return InvalidArgument("hypervisor.memory_slots: at most 256");
  if (h.kernel_params.find_first_of("\n\r\0", 0, 3) != std::string::npos) {
    return InvalidArgument("hypervisor.kernel_params: contains a control character");
  }
  if (h.accel == Accel::kKvm && !KvmUsable()) {
    return FailedPrecondition("hypervisor.accel: kvm requested but /dev/kvm is not usable here");
  }
  if (h.boot_from_template || h.boot_to_be_template) {
    if (h.memory_path.empty()) return InvalidArgument("hypervisor.memory_path: required for templating");
    if (h.device_state_path.empty()) {
      return InvalidArgument("hypervisor.device_state_path: required for templating");
    }
  }
  if (h.boot_from_template && h.boot_to_be_template) {
    return InvalidArgument("hypervisor: boot_from_template and boot_to_be_template exclude each other");
  }
  if (agent.boot_timeout.count() <= 0) return InvalidArgument("agent.boot_timeout: must be positive");
  if (agent.call_timeout.count() <= 0) return InvalidArgument("agent.call_timeout: must be positive");
  if (proxy.path.empty() || ::access(proxy.path.c_str(), X_OK) != 0) {
    return NotFound("proxy.path: '" + proxy.path + "' is not an executable");
  }
  if (!runtime_dir.empty() && runtime_dir[0] != '/') {
    return InvalidArgument("runtime_dir: '" + runtime_dir + "' is not an absolute path");
  }
  return OkStatus();
}

}  // namespace vmf
