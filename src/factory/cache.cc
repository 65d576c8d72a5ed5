#include "factory/cache.h"

#include <spdlog/spdlog.h>

#include "vm/exec.h"

namespace vmf {
namespace {

// Runs one short command in a new pool VM before it is paused. Under TCG a
// fresh QEMU process translates every guest code path anew; after this the
// guest's exec path is translated, so the client's first command starts
// fast. (With KVM it costs a few milliseconds of background work.)
Status WarmUp(VM& vm) {
  CollectOptions opts;
  opts.timeout = std::chrono::seconds(30);
  return ExecAndCollect(vm.agent(), {"true"}, opts).status();
}

}  // namespace

VMCache::VMCache(std::unique_ptr<Factory> base, CacheOptions options, PoolObserver* observer)
    : base_(std::move(base)),
      opts_(options),
      observer_(observer),
      backoff_(options.min_backoff, options.max_backoff) {
  ReportSize();
  for (int i = 0; i < std::max(1, opts_.parallelism); ++i) workers_.emplace_back([this] { RefillLoop(); });
  monitor_ = std::jthread([this] { MonitorLoop(); });
}

VMCache::~VMCache() { Close(); }

void VMCache::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_) return;
    closing_ = true;
  }
  cv_.notify_all();
  cancel_.Cancel();
  workers_.clear();  // joins
  if (monitor_.joinable()) monitor_.join();
  std::deque<std::unique_ptr<VM>> vms;
  {
    std::lock_guard<std::mutex> l(mu_);
    vms.swap(ready_);
  }
  vms.clear();  // stops them
  base_->Close();
}

bool VMCache::Fits(const VMConfig& request) const {
  return HypervisorMismatch(base_->Config().hypervisor, request.hypervisor, "the pool").ok();
}

void VMCache::ReportSize() {
  if (!observer_) return;
  std::lock_guard<std::mutex> r(report_mu_);
  int ready = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    ready = static_cast<int>(ready_.size());
  }
  observer_->PoolSize(ready, opts_.target);
}

Result<Acquired> VMCache::GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) {
  if (Fits(request)) {
    for (;;) {
      std::unique_ptr<VM> vm;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (ready_.empty()) break;
        vm = std::move(ready_.front());
        ready_.pop_front();
      }
      cv_.notify_all();  // a refill can start
      ReportSize();
      StepTimer timer(times);
      // Paused in the pool: resume, then make it unique and current.
      Status st = vm->Resume();
      if (st.ok()) st = PrepareForHandOut(*vm);
      if (!st.ok()) {
        spdlog::warn("pooled VM {} is unusable ({}); trying the next", vm->id(), st.ToString());
        continue;  // destroyed here
      }
      timer.Done("pool hand-out (resume, reseed, clock, hostname)");
      VMF_ASSIGN_OR_RETURN(bool grew, vm->GrowTo(request.hypervisor.vcpus, request.hypervisor.memory_mib));
      if (grew) timer.Done("hotplug");
      return Acquired{std::move(vm), VmSource::kPool};
    }
  }
  // A miss (or a request the pool cannot serve): straight from the base.
  // A VM whose VM process or proxy died while it was made (UNAVAILABLE) is
  // worth one more try; a bad request or a broken template is not.
  auto got = base_->GetVM(request, times, cancel);
  if (!got.ok() && got.status().code() == Code::kUnavailable && !(cancel && cancel->cancelled())) {
    spdlog::warn("making a VM for a pool miss failed ({}); trying once more", got.status().ToString());
    if (times) times->clear();
    got = base_->GetVM(request, times, cancel);
  }
  return got;
}

void VMCache::RefillLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!closing_) {
    bool need = static_cast<int>(ready_.size()) + booting_ < opts_.target;
    if (!need || backoff_.Waiting()) {
      if (!need) {
        cv_.wait(l);
      } else {
        cv_.wait_until(l, backoff_.retry_at());
      }
      continue;
    }
    ++booting_;
    l.unlock();
    auto got = base_->GetVM(base_->Config(), nullptr, &cancel_);
    Status st = got.ok() ? WarmUp(*got->vm) : got.status();
    if (st.ok()) st = got->vm->Pause();
    const VmSource source = got.ok() ? got->source : base_->State().base;
    if (observer_ && !cancel_.cancelled()) observer_->Refilled(source, st);
    l.lock();
    --booting_;
    if (closing_) break;  // the VM (if any) is stopped when it goes out of scope
    if (st.ok()) {
      spdlog::info("pool: VM {} ready (vmm pid {})", got->vm->id(), got->vm->vmm_pid());
      ready_.push_back(std::move(got->vm));
      backoff_.Succeeded();
      l.unlock();
      ReportSize();
      l.lock();
    } else {
      const Duration wait = backoff_.Failed(st.ToString());
      spdlog::warn("pool: making a VM failed ({} in a row), retrying in {} ms: {}", backoff_.in_a_row(),
                   wait.count(), backoff_.last_error());
    }
    cv_.notify_all();
  }
}

void VMCache::MonitorLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!closing_) {
    cv_.wait_for(l, opts_.monitor_interval);
    if (closing_) break;
    std::vector<std::unique_ptr<VM>> dead;
    for (auto it = ready_.begin(); it != ready_.end();) {
      if (!(*it)->Healthy()) {
        spdlog::warn("pool: VM {} died (vmm pid {}, proxy pid {}); replacing it", (*it)->id(),
                     (*it)->vmm_pid(), (*it)->proxy_pid());
        dead.push_back(std::move(*it));
        it = ready_.erase(it);
      } else {
        ++it;
      }
    }
    if (!dead.empty()) {
      cv_.notify_all();
      l.unlock();
      for (size_t i = 0; i < dead.size(); ++i) {
        if (observer_) observer_->Replaced();
      }
      ReportSize();
      const size_t n = dead.size();
      dead.clear();  // stops the proxy, removes the dir
      l.lock();
      // Counted once the observer has been told and the dead VM is gone, so
      // that whoever sees the count in Pool() also sees it in the metrics.
      replaced_ += n;
    }
  }
}

PoolState VMCache::Pool() const {
  std::lock_guard<std::mutex> l(mu_);
  PoolState s;
  s.target = opts_.target;
  for (const auto& vm : ready_) s.ready.push_back(vm->handle());
  s.booting = booting_;
  s.failures = backoff_.failures();
  s.replaced = replaced_;
  s.last_error = backoff_.last_error();
  s.retry_in = backoff_.retry_in();
  return s;
}

FactoryState VMCache::State() const {
  FactoryState s = base_->State();
  s.pool = Pool();
  return s;
}

}  // namespace vmf
