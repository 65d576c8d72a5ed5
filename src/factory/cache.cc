#include "factory/cache.h"

#include <spdlog/spdlog.h>

#include "daemon/metrics.h"

namespace vmf {
namespace {
thread_local bool last_was_hit = false;

// Runs one short command in a new pool VM before it is paused. Under TCG a
// fresh QEMU process translates every guest code path anew; after this the
// guest's exec path is translated, so the client's first command starts
// fast. (With KVM it costs a few milliseconds of background work.)
vmf::Status WarmUp(VM& vm) {
  ExecSpec spec;
  spec.exec_id = "vmf-warmup";
  spec.args = {"true"};
  Deadline deadline(std::chrono::seconds(30));
  VMF_RETURN_IF_ERROR(vm.agent().ExecProcess(spec));
  VMF_RETURN_IF_ERROR(vm.agent().WaitProcess(spec.exec_id, deadline).status());
  // Read both streams to their end so that the agent forgets the process.
  VMF_RETURN_IF_ERROR(vm.agent().ReadStdout(spec.exec_id, deadline).status());
  return vm.agent().ReadStderr(spec.exec_id, deadline).status();
}
}  // namespace

VMCache::VMCache(std::unique_ptr<Factory> base, CacheOptions options, Metrics* metrics)
    : base_(std::move(base)), opts_(std::move(options)), metrics_(metrics) {
  if (metrics_) metrics_->SetPool(0, opts_.target);
  for (int i = 0; i < std::max(1, opts_.parallelism); ++i) workers_.emplace_back([this] { RefillLoop(); });
  monitor_ = std::thread([this] { MonitorLoop(); });
}

VMCache::~VMCache() { Close(); }

bool VMCache::LastWasHit() { return last_was_hit; }

void VMCache::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_) return;
    closing_ = true;
  }
  cv_.notify_all();
  cancel_.Cancel();
  for (auto& t : workers_) t.join();
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
  return HypervisorMismatch(base_->Config().hypervisor, request.hypervisor, "the pool").empty();
}

Result<std::unique_ptr<VM>> VMCache::GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) {
  last_was_hit = false;
  auto start = Clock::now();
  if (Fits(request)) {
    for (;;) {
      std::unique_ptr<VM> vm;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (ready_.empty()) break;
        vm = std::move(ready_.front());
        ready_.pop_front();
        if (metrics_) metrics_->SetPool(static_cast<int>(ready_.size()), opts_.target);
      }
      cv_.notify_all();  // a refill can start
      StepTimer timer(times);
      // Paused in the pool: resume, then make it unique and current.
      vmf::Status st = vm->Resume();
      if (st.ok()) st = PrepareForHandOut(*vm);
      if (!st.ok()) {
        spdlog::warn("pooled VM {} is unusable ({}); trying the next", vm->id(), st.ToString());
        continue;  // destroyed here
      }
      timer.Done("pool hand-out (resume, reseed, clock, hostname)");
      VMF_ASSIGN_OR_RETURN(bool grew, vm->GrowTo(request.hypervisor.vcpus, request.hypervisor.memory_mib));
      if (grew) timer.Done("hotplug");
      last_was_hit = true;
      if (metrics_) {
        metrics_->ObserveGetVM("cache", std::chrono::duration<double>(Clock::now() - start).count());
      }
      return vm;
    }
  }
  // A miss (or a request the pool cannot serve): straight from the base.
  // A VM whose QEMU or proxy died while it was made (UNAVAILABLE) is worth
  // one more try; a bad request or a broken template is not.
  auto vm = base_->GetVM(request, times, cancel);
  if (!vm.ok() && vm.status().code() == Code::kUnavailable && !(cancel && cancel->cancelled())) {
    spdlog::warn("making a VM for a pool miss failed ({}); trying once more", vm.status().ToString());
    if (times) times->clear();
    vm = base_->GetVM(request, times, cancel);
  }
  if (vm.ok() && metrics_) {
    metrics_->ObserveGetVM(opts_.base_source, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return vm;
}

void VMCache::RefillLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!closing_) {
    bool need = static_cast<int>(ready_.size()) + booting_ < opts_.target;
    if (!need || Clock::now() < retry_at_) {
      if (!need) {
        cv_.wait(l);
      } else {
        cv_.wait_until(l, retry_at_);
      }
      continue;
    }
    ++booting_;
    l.unlock();
    auto vm = base_->GetVM(base_->Config(), nullptr, &cancel_);
    vmf::Status st = vm.ok() ? WarmUp(**vm) : vm.status();
    if (st.ok()) st = (*vm)->Pause();
    l.lock();
    --booting_;
    if (closing_) break;  // vm (if any) is stopped when it goes out of scope
    if (st.ok()) {
      spdlog::info("pool: VM {} ready (qemu pid {})", (*vm)->id(), (*vm)->qemu_pid());
      ready_.push_back(std::move(*vm));
      consecutive_failures_ = 0;
      retry_at_ = {};
      if (metrics_) {
        metrics_->BootSucceeded(opts_.base_source);
        metrics_->SetPool(static_cast<int>(ready_.size()), opts_.target);
      }
    } else {
      ++failures_;
      ++consecutive_failures_;
      last_error_ = st.ToString();
      auto backoff = opts_.min_backoff * (1 << std::min(consecutive_failures_ - 1, 10));
      backoff = std::min<Duration>(std::chrono::duration_cast<Duration>(backoff), opts_.max_backoff);
      retry_at_ = Clock::now() + backoff;
      spdlog::warn("pool: making a VM failed ({} in a row), retrying in {} ms: {}", consecutive_failures_,
                   backoff.count(), last_error_);
      if (metrics_) metrics_->BootFailed(opts_.base_source);
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
        spdlog::warn("pool: VM {} died (qemu pid {}, proxy pid {}); replacing it", (*it)->id(), (*it)->qemu_pid(),
                     (*it)->proxy_pid());
        dead.push_back(std::move(*it));
        it = ready_.erase(it);
        ++replaced_;
        if (metrics_) metrics_->PooledVmReplaced();
      } else {
        ++it;
      }
    }
    if (!dead.empty()) {
      if (metrics_) metrics_->SetPool(static_cast<int>(ready_.size()), opts_.target);
      cv_.notify_all();
      l.unlock();
      dead.clear();  // stops the proxy, removes the dir
      l.lock();
    }
  }
}

CacheStatus VMCache::Snapshot() {
  std::lock_guard<std::mutex> l(mu_);
  CacheStatus s;
  s.target = opts_.target;
  for (const auto& vm : ready_) s.ready.push_back(vm->handle());
  s.booting = booting_;
  s.failures = failures_;
  s.replaced = replaced_;
  s.last_error = last_error_;
  auto now = Clock::now();
  if (retry_at_ > now) s.retry_in = std::chrono::duration_cast<Duration>(retry_at_ - now);
  return s;
}

nlohmann::json VMCache::Status() {
  CacheStatus s = Snapshot();
  nlohmann::json ready = nlohmann::json::array();
  for (const auto& h : s.ready) ready.push_back({{"id", h.id}, {"qemu_pid", h.qemu_pid}, {"proxy_pid", h.proxy_pid}});
  return {{"source", "cache"}, {"base", base_->Status()}, {"target", s.target}, {"ready", ready},
          {"booting", s.booting}, {"failures", s.failures}, {"last_error", s.last_error},
          {"retry_in_ms", s.retry_in.count()}, {"replaced", s.replaced}};
}

}  // namespace vmf
