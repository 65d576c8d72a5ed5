// Metrics: counters, gauges and a latency histogram, rendered in the
// Prometheus text exposition format.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace vmf {

class Metrics {
 public:
  // source: "template", "direct" (what the pool's base made).
  void BootSucceeded(const std::string& source);
  void BootFailed(const std::string& source);
  // source: "cache" (a pool hit), "template", "direct".
  void ObserveGetVM(const std::string& source, double seconds);
  void SetPool(int ready, int target);
  void SetHandedOut(int n);
  void PooledVmReplaced();
  std::string Render() const;

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;  // cumulative counts per bound
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> boots_, failures_;
  std::map<std::string, Histogram> getvm_;
  int ready_ = 0, target_ = 0, handed_out_ = 0;
  uint64_t replaced_ = 0;
};

}  // namespace vmf
