// Logging: spdlog, with the VM id carried as a field ("vm=ID") on every line.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace vmf {

// Sets up the default logger on stderr at the given level ("info", "debug", ...).
void InitLogging(const std::string& level);
// A logger whose lines carry vm=ID; shares the default logger's sinks and level.
std::shared_ptr<spdlog::logger> VmLogger(const std::string& vm_id);

}  // namespace vmf
