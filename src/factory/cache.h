// VMCache: a pool of ready VMs over a base factory (template clones or cold
// boots). GetVM hands out a pooled VM in milliseconds and the pool refills
// in the background.
//
// - Refills run on `parallelism` worker threads.
// - Pooled VMs are paused, so they cost no CPU; on hand-out a VM is resumed,
//   reseeded, given the host's clock and its own hostname, as a clone is.
// - A failing base is retried with exponential backoff (shown in State());
//   it never shuts the pool down.
// - A pooled VM whose VM process or proxy dies is noticed and replaced.
// - What happens is reported to a PoolObserver, if given.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "factory/backoff.h"
#include "factory/factory.h"
#include "factory/pool_observer.h"

namespace vmf {

struct CacheOptions {
  int target = 2;       // VMs kept ready
  int parallelism = 1;  // concurrent refills
  Duration min_backoff = std::chrono::milliseconds(500);
  Duration max_backoff = std::chrono::seconds(30);
  Duration monitor_interval = std::chrono::milliseconds(300);
};

class VMCache : public Factory {
 public:
  VMCache(std::unique_ptr<Factory> base, CacheOptions options, PoolObserver* observer = nullptr);
  ~VMCache() override;

  // A pool hit when a ready VM fits the request (source kPool); otherwise
  // (a miss, or a request the pool cannot serve) straight from the base.
  Result<Acquired> GetVM(const VMConfig& request, StepTimes* times = nullptr,
                         CancelToken* cancel = nullptr) override;
  const VMConfig& Config() const override { return base_->Config(); }
  FactoryState State() const override;
  void Close() override;

  PoolState Pool() const;

 private:
  void RefillLoop();
  void MonitorLoop();
  bool Fits(const VMConfig& request) const;
  // Tells the observer the pool's current size; called without mu_ held.
  // Serialized, and the size is read inside, so that two threads reporting
  // at once cannot leave an older size as the last one reported.
  void ReportSize();

  std::unique_ptr<Factory> base_;
  CacheOptions opts_;
  PoolObserver* observer_;
  mutable std::mutex mu_;
  std::mutex report_mu_;  // taken before mu_, never while holding it
  std::condition_variable cv_;
  bool closing_ = false;
  std::deque<std::unique_ptr<VM>> ready_;
  int booting_ = 0;
  uint64_t replaced_ = 0;
  Backoff backoff_;
  CancelToken cancel_;  // aborts refills in progress on Close()
  // Last members: joined (by Close) before anything above goes.
  std::vector<std::jthread> workers_;
  std::jthread monitor_;
};

}  // namespace vmf
