// Metrics: counters, gauges and a latency histogram, rendered in the
// Prometheus text exposition format.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "factory/pool_observer.h"

namespace vmf {

class Metrics : public PoolObserver {
 public:
  // PoolObserver: the pool's size, refills by source, replacements.
  void PoolSize(int ready, int target) override;
  void Refilled(VmSource source, const Status& status) override;
  void Replaced() override;

  void ObserveGetVM(VmSource source, double seconds);
  void SetHandedOut(int n);
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
