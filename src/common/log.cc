#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace vmf {

void InitLogging(const std::string& level) {
  spdlog::drop("vmfactory");
  auto logger = spdlog::stderr_color_mt("vmfactory");
  logger->set_pattern("%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

std::shared_ptr<spdlog::logger> VmLogger(const std::string& vm_id) {
  auto base = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("vm=" + vm_id, base->sinks().begin(), base->sinks().end());
  logger->set_level(base->level());
  return logger;
}

}  // namespace vmf
