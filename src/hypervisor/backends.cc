#include "hypervisor/backends.h"

#include "hypervisor/qemu/qemu_hypervisor.h"

namespace vmf {

Result<HypervisorBackend*> BackendNamed(const std::string& name) {
  if (name == "qemu") return &QemuBackend();
  std::string known;
  for (const auto& n : BackendNames()) known += (known.empty() ? "" : ", ") + n;
  return NotFound("hypervisor.backend: '" + name + "' is not a known backend (" + known + ")");
}

std::vector<std::string> BackendNames() { return {"qemu"}; }

}  // namespace vmf
