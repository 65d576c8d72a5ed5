// RestoreTargets: clones started ahead of time and left waiting for their
// state. A target is what the first step of CloneFromTemplate makes (the
// runtime dir, the uid lease and cgroup, QEMU started with `-incoming
// defer` over the template's RAM file, the proxy, the agent connection);
// taking one skips QEMU's and the proxy's start, so a clone only restores,
// resumes and is prepared for hand-out.
//
// - A target is made for one template generation and serves only that
//   one: when the template is replaced, the old ones are stopped.
// - A target's guest does not run until its state is loaded: it uses no
//   CPU, and its memory is QEMU's own (the guest's RAM is not touched yet);
//   State() measures it (PSS) for `status` and the metrics.
// - One worker thread keeps `target` of them, retrying a failing template
//   with exponential backoff, and replaces a target whose QEMU or proxy dies.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "factory/backoff.h"
#include "vm/handle.h"
#include "vm/vm.h"

namespace vmf {

struct RestoreTargetOptions {
  int target = 0;  // clones kept waiting; 0: none
  Duration min_backoff = std::chrono::milliseconds(500);
  Duration max_backoff = std::chrono::seconds(30);
  Duration monitor_interval = std::chrono::seconds(1);
};

struct WaitingTarget {
  VMHandle vm;
  std::string generation;  // the template generation it restores
  uint64_t pss_bytes = 0;  // its QEMU's and proxy's PSS (0: could not be read)
};

struct RestoreTargetState {
  int target = 0;
  std::vector<WaitingTarget> waiting;
  int starting = 0;
  uint64_t taken = 0;     // handed to a clone
  uint64_t failures = 0;  // failed attempts to make one
  uint64_t replaced = 0;  // found dead or stale and stopped
  std::string last_error;
  Duration retry_in{0};
};

class RestoreTargets {
 public:
  // Targets are clones of the template at `root` made with `base`.
  RestoreTargets(VMConfig base, std::string root, VmDeps deps, RestoreTargetOptions options);
  ~RestoreTargets();
  RestoreTargets(const RestoreTargets&) = delete;
  RestoreTargets& operator=(const RestoreTargets&) = delete;

  // A waiting target for `generation` whose QEMU and proxy are alive, or
  // null when there is none (the caller starts a clone itself).
  std::unique_ptr<VM> Take(const std::string& generation);
  RestoreTargetState State() const;
  // Stops the worker and every waiting target. Idempotent.
  void Close();

 private:
  struct Target {
    std::unique_ptr<VM> vm;
    std::string generation;
  };
  void Loop();
  // Stops targets that died or belong to another generation than `current`
  // (with `l` released while they stop) and counts them as replaced.
  void Prune(const std::string& current, std::unique_lock<std::mutex>& l);

  VMConfig base_;
  std::string root_;
  VmDeps deps_;
  RestoreTargetOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closing_ = false;
  std::deque<Target> waiting_;
  int starting_ = 0;
  uint64_t taken_ = 0;
  uint64_t replaced_ = 0;
  Backoff backoff_;
  std::jthread worker_;  // last: joined (by Close) before anything above goes
};

}  // namespace vmf
