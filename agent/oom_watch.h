// OomWatch: the kernel's OOM kills in the containers' cgroups, as Kata's
// GetOOMEvent hands them to the host: each call gets the id of a container
// that had a process OOM-killed, at once if one is queued, else when the
// next kill happens (the reply is deferred; the host keeps one such call
// outstanding and publishes a TaskOOM event for each answer).
//
// Single-threaded, driven from the agent's poll() loop like ProcessTable:
//
//   OomWatch oom(answer);
//   oom.Watch("c1", &container->cgroup);   // after CreateContainer
//   oom.Request(stream_id);                 // GetOOMEvent
//   loop: oom.AddPollFds(&fds); poll(...); oom.HandlePollFds(...);
//   oom.Forget("c1");                       // before its cgroup goes
//
// Bounds: at most kMaxQueued unanswered events (the oldest dropped) and
// kMaxWaiters calls waiting (more: RESOURCE_EXHAUSTED).
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/status.h"
#include "container_cgroup.h"

namespace vmf::agent {

class OomWatch {
 public:
  static constexpr size_t kMaxQueued = 64;
  static constexpr size_t kMaxWaiters = 8;

  struct Answers {
    std::function<void(uint32_t stream_id, const std::string& container_id)> event;
    std::function<void(uint32_t stream_id, const Status& status)> failed;
  };
  explicit OomWatch(Answers answers) : answers_(std::move(answers)) {}

  // Watches cgroup (which must outlive the watch, until Forget) for
  // container id. A cgroup without a memory controller is not watched (the
  // reason is logged): no OOM events come from it.
  void Watch(const std::string& id, const ContainerCgroup* cgroup);
  // Looks once more (a kill not yet seen by poll() is still reported), then
  // stops watching id.
  void Forget(const std::string& id);
  // A GetOOMEvent call: answered now if an event is queued, else deferred.
  void Request(uint32_t stream_id);
  // A new host session: the deferred calls are never answered.
  void DropWaiters() { waiters_.clear(); }
  size_t waiter_count() const { return waiters_.size(); }
  size_t watch_count() const { return watches_.size(); }

  void AddPollFds(std::vector<pollfd>* fds);
  void HandlePollFds(const pollfd* fds, size_t count);

 private:
  struct Entry {
    const ContainerCgroup* cgroup = nullptr;
    UniqueFd notifier;
    uint64_t seen = 0;  // oom_kill count already reported
    // After a notice, the count is read on every loop iteration until this
    // (the agent's loop turns at least once a second, and at each SIGCHLD).
    std::chrono::steady_clock::time_point recheck_until;
  };
  static constexpr std::chrono::seconds kRecheckFor{3};
  // Queues an event for id if its count went up.
  void Check(const std::string& id, Entry* e);
  void Serve();

  Answers answers_;
  std::map<std::string, Entry> watches_;
  std::vector<std::string> polled_;  // the ids of the fds AddPollFds gave, in order
  std::deque<std::string> queued_;
  std::deque<uint32_t> waiters_;
};

}  // namespace vmf::agent
