#include "hypervisor/config.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

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

}  // namespace

Status ValidateCommon(const HypervisorConfig& h) {
  VMF_RETURN_IF_ERROR(CheckReadableFile("hypervisor.kernel", h.kernel));
  VMF_RETURN_IF_ERROR(CheckReadableFile("hypervisor.initrd", h.initrd));
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
  if (h.kernel_params.find_first_of("\n\r\0", 0, 3) != std::string::npos) {
    return InvalidArgument("hypervisor.kernel_params: contains a control character");
  }
  if (h.boot != BootMode::kCold) {
    if (h.memory_path.empty()) return InvalidArgument("hypervisor.memory_path: required for templating");
    if (h.device_state_path.empty()) {
      return InvalidArgument("hypervisor.device_state_path: required for templating");
    }
  }
  return OkStatus();
}

void FitCeilings(HypervisorConfig* h) {
  h->max_vcpus = std::max(h->max_vcpus, h->vcpus);
  h->max_memory_mib = std::max(h->max_memory_mib, h->memory_mib);
}

Result<Confinement> VmProcessConfinement(const VmConfinement& v, const std::string& dir) {
  Confinement c;
  c.change_ids = v.change_ids;
  c.uid = v.uid;
  c.gid = v.gid;
  c.cap_last = LastCapability();
  if (!v.jail) return c;
  c.namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
  c.root_dir = dir + "/.root";
  if (::mkdir(c.root_dir.c_str(), 0700) != 0 && errno != EEXIST)
    return ErrnoStatus(errno, "mkdir " + c.root_dir);
  return c;
}

}  // namespace vmf
