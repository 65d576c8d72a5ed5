// The hypervisor backends vmfactory knows, by the name config.toml uses
// ([hypervisor] backend = "qemu").
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "hypervisor/hypervisor.h"

namespace vmf {

// The backend of that name; NOT_FOUND naming the known ones otherwise.
Result<HypervisorBackend*> BackendNamed(const std::string& name);
std::vector<std::string> BackendNames();

}  // namespace vmf
