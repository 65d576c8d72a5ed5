#include "factory/restore_targets.h"

#include <spdlog/spdlog.h>

#include "common/procfs.h"
#include "factory/factory.h"
#include "factory/template.h"

namespace vmf {

RestoreTargets::RestoreTargets(VMConfig base, std::string root, VmDeps deps, RestoreTargetOptions options)
    : base_(std::move(base)),
      root_(std::move(root)),
      deps_(deps),
      opts_(options),
      backoff_(options.min_backoff, options.max_backoff) {
  if (opts_.target > 0) worker_ = std::jthread([this] { Loop(); });
}

RestoreTargets::~RestoreTargets() { Close(); }

void RestoreTargets::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_) return;
    closing_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::deque<Target> targets;
  {
    std::lock_guard<std::mutex> l(mu_);
    targets.swap(waiting_);
  }
  targets.clear();  // stops their QEMUs and proxies, removes their dirs
}

std::unique_ptr<VM> RestoreTargets::Take(const std::string& generation) {
  std::unique_ptr<VM> vm;
  {
    std::unique_lock<std::mutex> l(mu_);
    Prune(generation, l);  // what is left is of this generation and alive
    if (!waiting_.empty()) {
      vm = std::move(waiting_.front().vm);
      waiting_.pop_front();
      ++taken_;
    }
  }
  cv_.notify_all();  // the worker makes the next one
  return vm;
}

void RestoreTargets::Prune(const std::string& current, std::unique_lock<std::mutex>& l) {
  std::vector<Target> gone;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->generation != current || !it->vm->Healthy()) {
      spdlog::warn("restore target {} is {}; replacing it", it->vm->id(),
                   it->generation != current ? "for a replaced template" : "dead");
      gone.push_back(std::move(*it));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  if (gone.empty()) return;
  const size_t n = gone.size();
  l.unlock();
  gone.clear();
  l.lock();
  replaced_ += n;  // counted once they are gone, as the pool does
}

void RestoreTargets::Loop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!closing_) {
    // The template as it is now: targets of another generation go.
    l.unlock();
    auto t = LoadTemplate(root_);
    l.lock();
    if (closing_) break;
    Prune(t.ok() ? t->generation : "", l);  // none usable without a template
    const bool need = static_cast<int>(waiting_.size()) < opts_.target;
    if (!need || backoff_.Waiting()) {
      auto until = Clock::now() + opts_.monitor_interval;
      if (need) until = std::min(until, backoff_.retry_at());
      cv_.wait_until(l, until);
      continue;
    }
    ++starting_;
    l.unlock();
    // 1. of CloneFromTemplate, for the base config; the rest when taken.
    Result<std::unique_ptr<VM>> made = t.ok() ? StartClone(*t, base_, nullptr, nullptr, deps_) : t.status();
    l.lock();
    --starting_;
    if (made.ok()) {
      spdlog::info("restore target {} waiting (vmm pid {})", (*made)->id(), (*made)->vmm_pid());
      waiting_.push_back({std::move(*made), t->generation});
      backoff_.Succeeded();
      continue;
    }
    const Duration wait = backoff_.Failed(made.status().ToString());
    spdlog::warn("making a restore target failed ({} in a row), retrying in {} ms: {}", backoff_.in_a_row(),
                 wait.count(), backoff_.last_error());
  }
}

RestoreTargetState RestoreTargets::State() const {
  RestoreTargetState s;
  {
    std::lock_guard<std::mutex> l(mu_);
    s.target = opts_.target;
    for (const Target& t : waiting_) s.waiting.push_back({t.vm->handle(), t.generation, 0});
    s.starting = starting_;
    s.taken = taken_;
    s.failures = backoff_.failures();
    s.replaced = replaced_;
    s.last_error = backoff_.last_error();
    s.retry_in = backoff_.retry_in();
  }
  // Read outside the lock: smaps_rollup walks the process's mappings.
  for (WaitingTarget& w : s.waiting) {
    for (pid_t pid : {w.vm.vmm_pid, w.vm.proxy_pid}) {
      if (auto pss = ProcessPssBytes(pid); pss.ok()) w.pss_bytes += *pss;
    }
  }
  return s;
}

}  // namespace vmf
