// PoolObserver: what a VMCache reports as it works, for whoever keeps
// figures about it (the daemon's metrics). Called from the pool's threads,
// never under the pool's lock.
#pragma once

#include "common/status.h"
#include "factory/factory.h"

namespace vmf {

class PoolObserver {
 public:
  virtual ~PoolObserver() = default;
  // The number of ready VMs changed.
  virtual void PoolSize(int ready, int target) = 0;
  // A refill by the base (`source`) ended: made a VM, or failed with `status`.
  virtual void Refilled(VmSource source, const Status& status) = 0;
  // A pooled VM was found dead and is being replaced.
  virtual void Replaced() = 0;
};

}  // namespace vmf
