#include "daemon/metrics.h"

#include <cstdio>

namespace vmf {
namespace {
const std::vector<double> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}
}  // namespace

void Metrics::Refilled(VmSource source, const Status& status) {
  std::lock_guard<std::mutex> l(mu_);
  (status.ok() ? boots_ : failures_)[std::string(SourceName(source))]++;
}

void Metrics::ObserveGetVM(VmSource source, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  Histogram& h = getvm_[std::string(SourceName(source))];
  if (h.buckets.empty()) h.buckets.assign(kBounds.size(), 0);
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) h.buckets[i]++;
  }
  h.count++;
  h.sum += seconds;
}

void Metrics::PoolSize(int ready, int target) {
  std::lock_guard<std::mutex> l(mu_);
  ready_ = ready;
  target_ = target;
}

void Metrics::SetHandedOut(int n) {
  std::lock_guard<std::mutex> l(mu_);
  handed_out_ = n;
}

void Metrics::Replaced() {
  std::lock_guard<std::mutex> l(mu_);
  replaced_++;
}

std::string Metrics::Render() const {
  std::lock_guard<std::mutex> l(mu_);
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " +
           Num(v) + "\n";
  };
  gauge("vmfactory_pool_ready", "VMs ready in the pool.", ready_);
  gauge("vmfactory_pool_target", "VMs the pool keeps ready.", target_);
  gauge("vmfactory_handed_out", "VMs handed out and still running.", handed_out_);
  auto counter = [&](const char* name, const char* help, const std::map<std::string, uint64_t>& by_source) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const char* s : {"template", "direct"}) {
      auto it = by_source.find(s);
      out += std::string(name) + "{source=\"" + s + "\"} " +
             std::to_string(it == by_source.end() ? 0 : it->second) + "\n";
    }
  };
  counter("vmfactory_boots_total", "VMs made for the pool, by source.", boots_);
  counter("vmfactory_boot_failures_total", "Failed attempts to make a pool VM, by source.", failures_);
  out +=
      "# HELP vmfactory_pool_replaced_total Pooled VMs found dead and replaced.\n"
      "# TYPE vmfactory_pool_replaced_total counter\nvmfactory_pool_replaced_total " +
      std::to_string(replaced_) + "\n";
  out +=
      "# HELP vmfactory_getvm_seconds Time to serve GetVM, by source.\n# TYPE vmfactory_getvm_seconds "
      "histogram\n";
  for (const auto& [source, h] : getvm_) {
    for (size_t i = 0; i < kBounds.size(); ++i) {
      out += "vmfactory_getvm_seconds_bucket{source=\"" + source + "\",le=\"" + Num(kBounds[i]) + "\"} " +
             std::to_string(h.buckets[i]) + "\n";
    }
    out += "vmfactory_getvm_seconds_bucket{source=\"" + source + "\",le=\"+Inf\"} " +
           std::to_string(h.count) + "\n";
    out += "vmfactory_getvm_seconds_sum{source=\"" + source + "\"} " + Num(h.sum) + "\n";
    out += "vmfactory_getvm_seconds_count{source=\"" + source + "\"} " + std::to_string(h.count) + "\n";
  }
  return out;
}

}  // namespace vmf
