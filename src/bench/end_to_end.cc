#include "bench/end_to_end.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "bench/percentile.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"
#include "daemon/client.h"
#include "factory.pb.h"
#include "vm/exec.h"
#include "vm/handle.h"
#include "vm/vm.h"

namespace vmf {
namespace {

constexpr int kPoolSize = 2;
constexpr int kRestoreTargets = 2;
constexpr size_t kMaxStderr = 64 * 1024;
constexpr Duration kRunTimeout = std::chrono::seconds(300);
constexpr Duration kPoolTimeout = std::chrono::seconds(180);

class EndToEnd {
 public:
  EndToEnd(const EndToEndOptions& o, CancelToken* cancel)
      : o_(o), cancel_(cancel), socket_(o.runtime_dir + "/daemon.sock") {}
  ~EndToEnd() { daemon_.Stop(std::chrono::seconds(10)); }

  EndToEndResult Measure(const std::string& source) {
    EndToEndResult r{source, OkStatus(), {}, {}, {}};
    // Through a daemon of our own: its pool, or its restore targets alone.
    const bool daemon = source == "cache" || source == "restore";
    r.status = [&]() -> Status {
      if (source == "cache") VMF_RETURN_IF_ERROR(StartDaemon(kPoolSize, 0));
      if (source == "restore") VMF_RETURN_IF_ERROR(StartDaemon(0, kRestoreTargets));
      for (int i = 1; i <= o_.iterations; ++i) {
        if (cancel_->cancelled()) return Cancelled("interrupted");
        if (daemon) VMF_RETURN_IF_ERROR(WaitPoolFull());
        VMF_ASSIGN_OR_RETURN(Duration d, RunOnce(source));
        std::fprintf(stderr, "bench: end to end %s %d/%d: %lld ms\n", source.c_str(), i, o_.iterations,
                     static_cast<long long>(d.count()));
        r.samples.push_back(d);
      }
      return OkStatus();
    }();
    if (daemon) daemon_.Stop(std::chrono::seconds(10));
    r.p50 = Percentile(r.samples, 50);
    r.p95 = Percentile(r.samples, 95);
    return r;
  }

  DaemonLoadResult Load(int concurrency, int per_worker) {
    DaemonLoadResult r;
    r.concurrency = concurrency;
    r.status = [&]() -> Status {
      // The pool first, then the restore targets, then clones of the template.
      if (!daemon_.valid() || !daemon_.Running())
        VMF_RETURN_IF_ERROR(StartDaemon(kPoolSize, kRestoreTargets));
      VMF_ASSIGN_OR_RETURN(const uint64_t taken_before, TargetsTaken());
      std::mutex mu;
      std::vector<Duration> getvm;
      Status first = OkStatus();
      std::atomic<int> from_pool{0};
      const auto t0 = Clock::now();
      {
        std::vector<std::jthread> workers;
        for (int w = 0; w < concurrency; ++w) {
          workers.emplace_back([&] {
            for (int i = 0; i < per_worker && !cancel_->cancelled(); ++i) {
              auto one = OneClient();
              std::lock_guard l(mu);
              if (!one.ok()) {
                if (first.ok()) first = one.status();
                return;
              }
              getvm.push_back(one->first);
              if (one->second) ++from_pool;
            }
          });
        }
      }
      r.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
      VMF_RETURN_IF_ERROR(first);
      if (cancel_->cancelled()) return Cancelled("interrupted");
      r.vms = static_cast<int>(getvm.size());
      r.from_pool = from_pool;
      VMF_ASSIGN_OR_RETURN(const uint64_t taken_after, TargetsTaken());
      r.from_targets = static_cast<int>(taken_after - taken_before);
      r.vms_per_s = r.wall_s > 0 ? r.vms / r.wall_s : 0;
      r.getvm_p50 = Percentile(getvm, 50);
      r.getvm_p99 = Percentile(getvm, 99);
      return OkStatus();
    }();
    std::fprintf(stderr, "bench: daemon load, %d at once: %d VMs in %.2f s (%d from the pool)%s\n",
                 concurrency, r.vms, r.wall_s, r.from_pool,
                 r.status.ok() ? "" : (": " + r.status.ToString()).c_str());
    return r;
  }

  void StopDaemon() { daemon_.Stop(std::chrono::seconds(10)); }

  // Once the daemon is full: how many restore targets it has handed out.
  Result<uint64_t> TargetsTaken() {
    VMF_RETURN_IF_ERROR(WaitPoolFull());
    VMF_ASSIGN_OR_RETURN(auto client, DaemonClient::Connect(socket_));
    VMF_ASSIGN_OR_RETURN(auto status, client->GetStatus());
    return status.restore().taken();
  }

 private:
  // One client of the daemon: a VM (GetVM timed), `true` run in it, stopped.
  // Returns the GetVM time and whether the VM came from the pool.
  Result<std::pair<Duration, bool>> OneClient() {
    VMF_ASSIGN_OR_RETURN(auto client, DaemonClient::Connect(socket_));
    const auto t0 = Clock::now();
    VMF_ASSIGN_OR_RETURN(
        vmfactory::v1::VM handed,
        client->GetVM(o_.config.hypervisor.vcpus, o_.config.hypervisor.memory_mib, Deadline(kRunTimeout)));
    const Duration took = std::chrono::duration_cast<Duration>(Clock::now() - t0);
    VMF_ASSIGN_OR_RETURN(auto vm, VM::Attach(VMHandle::FromProto(handed), o_.config));
    auto ran = ExecAndCollect(vm->agent(), {"true"});
    vm->Stop();
    if (!ran.ok()) return ran.status().WithContext("run `true` in a VM from the daemon");
    if (ran->exit_code != 0) return Internal("`true` exited " + std::to_string(ran->exit_code));
    return std::make_pair(took, handed.source() == "cache");
  }

  // The global options and the VM's size and image, as the bench has them.
  std::vector<std::string> Command(const std::string& sub) const {
    std::vector<std::string> argv = {SelfExe()};
    if (!o_.config_path.empty()) argv.insert(argv.end(), {"--config", o_.config_path});
    argv.insert(argv.end(), {"--template-path", o_.template_root, "--socket", socket_, sub, "--cpus",
                             std::to_string(o_.config.hypervisor.vcpus), "--memory",
                             std::to_string(o_.config.hypervisor.memory_mib), "--kernel",
                             o_.config.hypervisor.kernel, "--initrd", o_.config.hypervisor.initrd});
    return argv;
  }

  // Starts argv with our runtime dir (as soak does: the CLI reads it from the environment).
  Result<ChildProcess> Spawn(const std::vector<std::string>& argv, const SpawnOptions& so) const {
    ::setenv("VMF_RUNTIME_DIR", o_.runtime_dir.c_str(), 1);
    auto child = ChildProcess::Spawn(argv, so);
    ::unsetenv("VMF_RUNTIME_DIR");
    return child;
  }

  // One `vmfactory run -v -- true`, timed from just before its start to its
  // exit; it must succeed and say it used `source`.
  Result<Duration> RunOnce(const std::string& source) {
    std::vector<std::string> argv = Command("run");
    argv.emplace_back("-v");
    if (source == "cold") argv.emplace_back("--cold");
    argv.insert(argv.end(), {"--", "true"});
    const std::string err_path = o_.runtime_dir + "/end-to-end-run.err";
    UniqueFd err_fd(::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!err_fd) return ErrnoStatus(errno, "create " + err_path);
    SpawnOptions so;
    so.stderr_fd = err_fd.get();
    const auto t0 = Clock::now();
    VMF_ASSIGN_OR_RETURN(ChildProcess child, Spawn(argv, so));
    auto waited = child.Wait(Deadline(kRunTimeout));
    const auto t1 = Clock::now();
    if (!waited.ok()) return waited.status().WithContext("`vmfactory run -- true` (" + source + ")");
    const int status = *waited;
    const std::string err = TailOfFile(err_path, kMaxStderr);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Internal("`vmfactory run -- true` (" + source + ") ended with " + DescribeWaitStatus(status) +
                      ": " + err.substr(0, 2000));
    }
    const std::string want = source == "cold"       ? "source: cold boot"
                             : source == "template" ? "source: template"
                             : source == "restore"  ? ", template"  // through the daemon: a clone of a target
                                                    : ", cache";
    if (err.find(want) == std::string::npos) {
      return FailedPrecondition("`vmfactory run` did not use the " + source + " (wanted \"" + want +
                                "\"): " + err.substr(0, 2000));
    }
    return std::chrono::duration_cast<Duration>(t1 - t0);
  }

  Status StartDaemon(int pool, int restore_targets) {
    std::vector<std::string> argv = Command("serve");
    argv.insert(argv.end(), {"--cache", std::to_string(pool), "--restore-targets",
                             std::to_string(restore_targets), "--metrics", ""});
    pool_ = pool;
    restore_targets_ = restore_targets;
    UniqueFd log(::open((o_.runtime_dir + "/end-to-end-daemon.log").c_str(),
                        O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return ErrnoStatus(errno, "open the daemon log");
    SpawnOptions so;
    so.stderr_fd = log.get();
    VMF_ASSIGN_OR_RETURN(daemon_, Spawn(argv, so));
    return OkStatus();
  }

  Status WaitPoolFull() {
    auto full = WaitForFullPool(
        socket_, pool_, Deadline(kPoolTimeout),
        [&]() -> Status {
          if (cancel_->cancelled()) return Cancelled("interrupted");
          if (!daemon_.Running()) {
            return Unavailable("the daemon exited; see " + o_.runtime_dir + "/end-to-end-daemon.log");
          }
          return OkStatus();
        },
        false, restore_targets_);
    return full.status().WithContext("the daemon's pool did not fill");
  }

  const EndToEndOptions& o_;
  CancelToken* cancel_;
  std::string socket_;
  ChildProcess daemon_;
  int pool_ = 0;  // what the daemon keeps: waited for before each sample
  int restore_targets_ = 0;
};

}  // namespace

std::vector<DaemonLoadResult> MeasureDaemonLoad(const EndToEndOptions& options,
                                                const std::vector<int>& concurrency, int per_worker,
                                                CancelToken* cancel) {
  std::fprintf(stderr, "bench: === daemon under load ===\n");
  EndToEnd e2e(options, cancel);
  std::vector<DaemonLoadResult> results;
  for (int c : concurrency) {
    if (cancel->cancelled()) break;
    results.push_back(e2e.Load(c, per_worker));
  }
  e2e.StopDaemon();
  return results;
}

std::vector<EndToEndResult> MeasureEndToEnd(const EndToEndOptions& options, CancelToken* cancel) {
  std::fprintf(stderr, "bench: === end to end (vmfactory run -- true) ===\n");
  EndToEnd e2e(options, cancel);
  std::vector<EndToEndResult> results;
  for (const std::string& source : options.sources) {
    results.push_back(e2e.Measure(source));
    if (!results.back().status.ok()) {
      std::fprintf(stderr, "bench: end to end %s FAILED: %s\n", source.c_str(),
                   results.back().status.ToString().c_str());
    }
  }
  return results;
}

}  // namespace vmf
