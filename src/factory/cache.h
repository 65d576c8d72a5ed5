// VMCache: a pool of ready VMs over a base factory (template clones or cold
// boots). GetVM hands out a pooled VM in milliseconds and the pool refills
// in the background.
//
// - Refills run on `parallelism` worker threads (these hosts have 2 cores).
// - Pooled VMs are paused, so they cost no CPU; on hand-out a VM is resumed,
//   reseeded, given the host's clock and its own hostname, as a clone is.
// - A failing base is retried with exponential backoff (shown in Status());
//   it never shuts the pool down.
// - A pooled VM whose QEMU dies is noticed and replaced.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "factory/factory.h"

namespace vmf {

class Metrics;

struct CacheOptions {
  int target = 2;       // VMs kept ready
  int parallelism = 1;  // concurrent refills
  std::string base_source = "direct";  // for metrics and status: "template" or "direct"
  Duration min_backoff = std::chrono::milliseconds(500);
  Duration max_backoff = std::chrono::seconds(30);
  Duration monitor_interval = std::chrono::milliseconds(300);
};

struct CacheStatus {
  int target = 0;
  std::vector<VMHandle> ready;
  int booting = 0;
  uint64_t failures = 0;
  uint64_t replaced = 0;
  std::string last_error;
  Duration retry_in{0};
};

class VMCache : public Factory {
 public:
  VMCache(std::unique_ptr<Factory> base, CacheOptions options, Metrics* metrics = nullptr);
  ~VMCache() override;

  // Source of the VM last handed out by GetVM on this thread: "cache" for a
  // pool hit, otherwise the base's.
  Result<std::unique_ptr<VM>> GetVM(const VMConfig& request, StepTimes* times = nullptr,
                                    CancelToken* cancel = nullptr) override;
  const VMConfig& Config() const override { return base_->Config(); }
  nlohmann::json Status() override;
  void Close() override;

  CacheStatus Snapshot();
  // True if the last GetVM on this thread was served from the pool.
  static bool LastWasHit();

 private:
  void RefillLoop();
  void MonitorLoop();
  bool Fits(const VMConfig& request) const;

  std::unique_ptr<Factory> base_;
  CacheOptions opts_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;
  std::deque<std::unique_ptr<VM>> ready_;
  int booting_ = 0;
  uint64_t failures_ = 0;
  uint64_t replaced_ = 0;
  int consecutive_failures_ = 0;
  std::string last_error_;
  Clock::time_point retry_at_{};
  CancelToken cancel_;  // aborts refills in progress on Close()
  std::vector<std::thread> workers_;
  std::thread monitor_;
};

}  // namespace vmf
