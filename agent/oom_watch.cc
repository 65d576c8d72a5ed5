#include "oom_watch.h"

#include "log.h"

namespace vmf::agent {

void OomWatch::Watch(const std::string& id, const ContainerCgroup* cgroup) {
  if (cgroup == nullptr || !cgroup->valid()) return;
  Result<UniqueFd> fd = cgroup->OpenOomNotifier();
  if (!fd.ok()) {
    Log("container %s: no OOM events: %s", id.c_str(), fd.status().ToString().c_str());
    return;
  }
  Entry e;
  e.cgroup = cgroup;
  e.notifier = std::move(*fd);
  e.seen = cgroup->OomKills();
  watches_[id] = std::move(e);
}

void OomWatch::Forget(const std::string& id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  Check(id, &it->second);
  watches_.erase(it);
  Serve();
}

void OomWatch::Request(uint32_t stream_id) {
  if (queued_.empty() && waiters_.size() >= kMaxWaiters) {
    answers_.failed(stream_id, ResourceExhausted("too many GetOOMEvent calls waiting"));
    return;
  }
  waiters_.push_back(stream_id);
  Serve();
}

void OomWatch::AddPollFds(std::vector<pollfd>* fds) {
  polled_.clear();
  for (auto& [id, e] : watches_) {
    fds->push_back(pollfd{e.notifier.get(), static_cast<short>(POLLIN | POLLPRI), 0});
    polled_.push_back(id);
  }
}

void OomWatch::HandlePollFds(const pollfd* fds, size_t count) {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < count && i < polled_.size(); ++i) {
    if ((fds[i].revents & (POLLIN | POLLPRI | POLLERR)) == 0) continue;
    auto it = watches_.find(polled_[i]);
    if (it == watches_.end()) continue;
    it->second.cgroup->DrainOomNotifier(it->second.notifier.get());
    // The notice may come as the OOM begins (v1 does), before the kill is
    // counted: keep looking for a while.
    it->second.recheck_until = now + kRecheckFor;
  }
  for (auto& [id, e] : watches_) {
    if (e.recheck_until > now) Check(id, &e);
  }
  Serve();
}

void OomWatch::Check(const std::string& id, Entry* e) {
  uint64_t kills = e->cgroup->OomKills();
  if (kills <= e->seen) return;
  e->seen = kills;
  e->recheck_until = {};
  Log("container %s: OOM kill (%llu so far)", id.c_str(), static_cast<unsigned long long>(kills));
  if (queued_.size() >= kMaxQueued) queued_.pop_front();
  queued_.push_back(id);
}

void OomWatch::Serve() {
  while (!queued_.empty() && !waiters_.empty()) {
    uint32_t stream = waiters_.front();
    waiters_.pop_front();
    std::string id = std::move(queued_.front());
    queued_.pop_front();
    answers_.event(stream, id);
  }
}

}  // namespace vmf::agent
