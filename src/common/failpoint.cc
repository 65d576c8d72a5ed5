#include "common/failpoint.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

namespace vmf::failpoint {
namespace {

std::atomic<bool> g_armed{false};
std::mutex g_mu;
std::shared_ptr<const Hook> g_hook;

struct Rule {
  std::string point;
  bool qemu = true;  // else the proxy
  double probability = 1.0;
};

}  // namespace

void SetHook(Hook hook) {
  std::lock_guard<std::mutex> l(g_mu);
  g_hook = hook ? std::make_shared<const Hook>(std::move(hook)) : nullptr;
  g_armed.store(g_hook != nullptr, std::memory_order_release);
}

void Hit(std::string_view point, const Target& target) {
  if (!g_armed.load(std::memory_order_acquire)) return;
  std::shared_ptr<const Hook> hook;
  {
    std::lock_guard<std::mutex> l(g_mu);
    hook = g_hook;
  }
  if (hook) (*hook)(point, target);
}

std::string DescribeKill(bool qemu, pid_t pid) {
  return std::string("SIGKILL of ") + (qemu ? "QEMU" : "the proxy") + " (pid " + std::to_string(pid) + ")";
}

Status InstallFromSpec(const std::string& spec) {
  std::vector<Rule> rules;
  std::stringstream ss(spec);
  std::string entry;
  while (std::getline(ss, entry, ',')) {
    if (entry.empty()) continue;
    auto eq = entry.find('=');
    auto colon = entry.find(':', eq == std::string::npos ? 0 : eq);
    if (eq == std::string::npos || colon == std::string::npos) {
      return InvalidArgument("VMF_FAILPOINTS: '" + entry + "' is not POINT=qemu|proxy:PROBABILITY");
    }
    Rule r;
    r.point = entry.substr(0, eq);
    std::string who = entry.substr(eq + 1, colon - eq - 1);
    if (r.point != kVmBoot && r.point != kVmRestore && r.point != kVmHotplug && r.point != kTemplateSave) {
      return InvalidArgument("VMF_FAILPOINTS: unknown point '" + r.point + "'");
    }
    if (who != "qemu" && who != "proxy") {
      return InvalidArgument("VMF_FAILPOINTS: '" + who + "' in '" + entry + "' is neither qemu nor proxy");
    }
    r.qemu = who == "qemu";
    std::string p = entry.substr(colon + 1);
    char* end = nullptr;
    r.probability = std::strtod(p.c_str(), &end);
    if (p.empty() || end != p.c_str() + p.size() || !(r.probability >= 0.0 && r.probability <= 1.0)) {
      return InvalidArgument("VMF_FAILPOINTS: probability '" + p + "' in '" + entry + "' is not within 0..1");
    }
    rules.push_back(std::move(r));
  }
  if (rules.empty()) {
    SetHook(nullptr);
    return OkStatus();
  }
  auto rng = std::make_shared<std::pair<std::mutex, std::mt19937_64>>();
  rng->second.seed(std::random_device{}());
  SetHook([rules = std::move(rules), rng](std::string_view point, const Target& t) {
    for (const auto& r : rules) {
      if (r.point != point) continue;
      double roll = 0.0;
      {
        std::lock_guard<std::mutex> l(rng->first);
        roll = std::uniform_real_distribution<double>(0.0, 1.0)(rng->second);
      }
      if (roll >= r.probability) continue;
      pid_t pid = r.qemu ? t.vmm_pid : t.proxy_pid;
      if (pid <= 0) continue;
      spdlog::warn("fail point {}: {} of VM {}", point, DescribeKill(r.qemu, pid), t.vm_id);
      ::kill(pid, SIGKILL);
    }
  });
  return OkStatus();
}

Status InstallFromEnv() {
  const char* v = std::getenv("VMF_FAILPOINTS");
  if (v == nullptr) return OkStatus();
  return InstallFromSpec(v);
}

}  // namespace vmf::failpoint
