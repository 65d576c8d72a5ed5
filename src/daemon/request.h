// Decoding of the daemon's API requests, kept apart from the daemon so that
// tests and fuzzers can drive it without a pool, a socket or a VM.
#pragma once

#include <string>

#include "common/status.h"
#include "vm/config.h"

namespace vmf {

// The VM a GetVM request asks for: `base` (the daemon's VM config) with the
// request's cpus / memory_mib where they are non-zero, the hotplug ceilings
// raised to fit, and the result validated. A payload that is not a
// GetVMRequest is INVALID_ARGUMENT; Validate()'s errors keep their code.
// `backend` checks the hypervisor options (default: the one the config names).
Result<VMConfig> DecodeGetVMRequest(const std::string& payload, const VMConfig& base,
                                    const HypervisorBackend* backend = nullptr);

}  // namespace vmf
