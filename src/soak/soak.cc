#include "soak/soak.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "common/census.h"
#include "common/failpoint.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"
#include "common/scoped_dir.h"
#include "daemon/client.h"
#include "factory/template.h"
#include "vm/exec.h"
#include "vm/vm.h"

namespace vmf {
namespace {

using json = nlohmann::json;

const std::vector<std::string> kFaults = {"qemu-exec",   "proxy-exec",   "qemu-hotplug", "proxy-hotplug",
                                          "qemu-pooled", "proxy-pooled", "daemon",       "owner-exit"};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::lround(p * static_cast<double>(v.size() - 1)));
  return v[std::min(i, v.size() - 1)];
}

class Soak {
 public:
  Soak(const SoakOptions& o, CancelToken* cancel) : opts_(o), cancel_(cancel) {
    uint64_t seed = o.seed != 0 ? o.seed : std::random_device{}();
    seed_ = seed;
    rng_.seed(seed);
  }

  int Run() {
    Status st = Setup();
    if (!st.ok()) {
      std::fprintf(stderr, "vmfactory soak: setup failed: %s\n", st.ToString().c_str());
      Teardown();
      return 1;
    }
    auto start = Clock::now();
    auto end = start + std::chrono::seconds(opts_.duration_s);
    auto next_report = start + std::chrono::seconds(60);
    while (Clock::now() < end && !cancel_->cancelled() && daemon_.valid()) {
      Cycle();
      if (Clock::now() >= next_report) {
        next_report += std::chrono::seconds(60);
        std::fprintf(stderr,
                     "vmfactory soak: [%4.0f s] %d cycles, %d ok, %d faults, %d unexpected failures\n",
                     std::chrono::duration<double>(Clock::now() - start).count(), cycles_, ok_, faults_total_,
                     unexpected_);
      }
    }
    elapsed_s_ = std::chrono::duration<double>(Clock::now() - start).count();
    CheckEnd();
    Teardown();
    Report();
    return unexpected_ == 0 && leaks_.empty() && duplicates_ == 0 && !cancel_->cancelled() ? 0 : 1;
  }

 private:
  // --- setup and teardown ---

  Status Setup() {
    char tmpl[] = "/tmp/vmf-soak-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return ErrnoStatus(errno, "mkdtemp /tmp/vmf-soak-XXXXXX");
    work_ = ScopedDir::Adopt(tmpl);
    runtime_ = work_.path() + "/run";
    template_root_ = work_.path() + "/template";
    socket_ = runtime_ + "/daemon.sock";
    VMF_RETURN_IF_ERROR(MakeDirs(runtime_));
    config_ = opts_.config;
    config_.runtime_dir = runtime_;
    std::fprintf(stderr, "vmfactory soak: work dir %s, seed %llu; making the template\n",
                 work_.path().c_str(), static_cast<unsigned long long>(seed_));
    TemplateOptions to;
    VMF_RETURN_IF_ERROR(CreateTemplate(config_, template_root_, to).status());
    empty_ = TakeCensus(runtime_);
    VMF_RETURN_IF_ERROR(StartDaemon());
    VMF_ASSIGN_OR_RETURN(auto s, WaitPoolFull(std::chrono::seconds(180)));
    (void)s;
    // Settled: the daemon closes the connection of our last status call on
    // its own time, and that fd must not count in the baseline.
    baseline_ = TakeCensus(runtime_, daemon_.pid());
    for (int i = 0; i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      HostCensus again = TakeCensus(runtime_, daemon_.pid());
      if (again == baseline_) break;
      baseline_ = again;
    }
    std::fprintf(stderr, "vmfactory soak: pool of %d ready; census %s; running for %d s\n", opts_.pool,
                 baseline_.ToString().c_str(), opts_.duration_s);
    return OkStatus();
  }

  Status StartDaemon() {
    std::vector<std::string> argv = {SelfExe(),      "--template-path",
                                     template_root_, "--socket",
                                     socket_,        "serve",
                                     "--cache",      std::to_string(opts_.pool),
                                     "--metrics",    "",
                                     "--cpus",       std::to_string(config_.hypervisor.vcpus),
                                     "--memory",     std::to_string(config_.hypervisor.memory_mib),
                                     "--kernel",     config_.hypervisor.kernel,
                                     "--initrd",     config_.hypervisor.initrd};
    UniqueFd log(
        ::open((work_.path() + "/daemon.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return ErrnoStatus(errno, "open the daemon log");
    SpawnOptions so;
    so.stderr_fd = log.get();
    // Inside the daemon: clones killed at restore while the pool refills.
    char spec[128];
    std::snprintf(spec, sizeof(spec), "vm.restore=qemu:%.3f,vm.restore=proxy:%.3f", opts_.fault_rate / 8,
                  opts_.fault_rate / 8);
    ::setenv("VMF_RUNTIME_DIR", runtime_.c_str(), 1);
    ::setenv("VMF_FAILPOINTS", spec, 1);
    auto d = ChildProcess::Spawn(argv, so);
    ::unsetenv("VMF_FAILPOINTS");
    ::unsetenv("VMF_RUNTIME_DIR");
    VMF_ASSIGN_OR_RETURN(daemon_, std::move(d));
    return OkStatus();
  }

  Result<vmfactory::v1::StatusResponse> DaemonStatus() {
    VMF_ASSIGN_OR_RETURN(auto c, DaemonClient::Connect(socket_));
    return c->GetStatus();
  }

  Result<vmfactory::v1::StatusResponse> WaitPoolFull(Duration timeout, bool none_handed_out = false) {
    return WaitForFullPool(
        socket_, opts_.pool, Deadline(timeout),
        [&]() -> Status {
          if (cancel_->cancelled()) return Cancelled("interrupted");
          if (!daemon_.Running()) return Unavailable("the daemon exited; its log:\n" + DaemonLog());
          return OkStatus();
        },
        none_handed_out);
  }

  std::string DaemonLog() { return TailOfFile(work_.path() + "/daemon.log", 2000); }

  void Teardown() {
    failpoint::SetHook(nullptr);
    if (daemon_.valid()) {
      daemon_.Signal(SIGTERM);
      auto st = daemon_.Wait(Deadline(std::chrono::seconds(60)));
      if (!st.ok() || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        leaks_.emplace_back("the daemon did not exit cleanly on SIGTERM");
      }
      daemon_.Stop();
      // With the daemon gone, nothing of it may be left.
      HostCensus after = TakeCensus(runtime_);
      if (!(after == empty_)) leaks_.push_back("after the daemon exited: " + after.ToString());
      final_ = after;
    }
    if (!template_root_.empty()) (void)DestroyTemplate(template_root_);
    if (!leaks_.empty()) {
      std::fprintf(stderr, "vmfactory soak: keeping %s for inspection\n", work_.path().c_str());
      (void)work_.Release();
    }
  }

  // --- cycles ---

  struct Held {
    vmfactory::v1::VM proto;
    std::unique_ptr<VM> vm;
  };

  Result<Held> Take(uint32_t cpus = 0, uint32_t memory_mib = 0) {
    VMF_ASSIGN_OR_RETURN(auto c, DaemonClient::Connect(socket_));
    auto t0 = Clock::now();
    VMF_ASSIGN_OR_RETURN(auto proto, c->GetVM(cpus, memory_mib, Deadline(std::chrono::seconds(120))));
    getvm_ms_.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!seen_ids_.insert(proto.id()).second) {
      ++duplicates_;
      Unexpected("VM " + proto.id() + " was handed out twice");
    }
    Held h;
    h.proto = proto;
    VMF_ASSIGN_OR_RETURN(h.vm, VM::Attach(VMHandle::FromProto(proto), config_));
    return h;
  }

  // A command whose output proves the VM is the one we were given and has
  // randomness of its own.
  Status Check(Held& h) {
    CollectOptions o;
    o.timeout = std::chrono::seconds(60);
    auto r = ExecAndCollect(h.vm->agent(), {"sh", "-c", "hostname; cat /proc/sys/kernel/random/uuid"}, o);
    if (!r.ok()) return h.vm->WithCauses(r.status());
    if (r->exit_code != 0) return Internal("the check command exited " + std::to_string(r->exit_code));
    auto nl = r->out.find('\n');
    std::string host = r->out.substr(0, nl);
    std::string uuid = nl == std::string::npos ? "" : r->out.substr(nl + 1);
    if (host != h.proto.id()) return Internal("hostname '" + host + "' is not the VM id " + h.proto.id());
    if (uuid.size() < 36) return Internal("no uuid from the guest: '" + r->out + "'");
    if (!uuids_.insert(uuid).second) return Internal("two VMs produced the same random uuid " + uuid);
    return OkStatus();
  }

  void Cycle() {
    ++cycles_;
    std::string fault;
    if (std::uniform_real_distribution<double>(0, 1)(rng_) < opts_.fault_rate) {
      fault = kFaults[std::uniform_int_distribution<size_t>(0, kFaults.size() - 1)(rng_)];
      ++faults_[fault];
      ++faults_total_;
    }
    Status st;
    if (fault.empty()) {
      st = NormalCycle();
    } else if (fault == "qemu-exec" || fault == "proxy-exec") {
      st = KillDuringExec(fault == "qemu-exec");
    } else if (fault == "qemu-hotplug" || fault == "proxy-hotplug") {
      st = KillAtHotplug(fault == "qemu-hotplug");
    } else if (fault == "qemu-pooled" || fault == "proxy-pooled") {
      st = KillPooled(fault == "qemu-pooled");
    } else if (fault == "daemon") {
      st = KillDaemon();
    } else if (fault == "owner-exit") {
      st = OwnerExits();
    }
    if (st.ok()) {
      ++ok_;
    } else if (KilledByDaemonFailPoint(st)) {
      ++daemon_fail_point_errors_;
      ++expected_errors_;
    } else {
      Unexpected((fault.empty() ? "normal cycle" : fault) + ": " + st.ToString());
    }
  }

  // The daemon's own fail point kills clones at restore. A pool miss tries
  // a second clone, so the client sees such a death only when both were
  // killed; the error it gets then is the injected fault, not a failure,
  // if the daemon logged killing the very process the error names.
  bool KilledByDaemonFailPoint(const Status& st) {
    static const std::regex kPid(R"(\(pid (\d+)\))");
    const std::string& msg = st.message();
    std::string log = TailOfFile(work_.path() + "/daemon.log", 1 << 20);
    for (auto it = std::sregex_iterator(msg.begin(), msg.end(), kPid); it != std::sregex_iterator(); ++it) {
      pid_t pid = static_cast<pid_t>(std::stol((*it)[1].str()));
      for (bool qemu : {true, false}) {
        if (log.find(failpoint::DescribeKill(qemu, pid)) != std::string::npos) return true;
      }
    }
    return false;
  }

  void Unexpected(const std::string& what) {
    ++unexpected_;
    if (failures_.size() < 50) failures_.push_back(what);
    std::fprintf(stderr, "vmfactory soak: UNEXPECTED (cycle %d): %s\n", cycles_, what.substr(0, 500).c_str());
  }

  Status NormalCycle() {
    // Now and then a bigger VM: the daemon hot-adds a vCPU and memory.
    bool bigger = std::uniform_int_distribution<int>(0, 9)(rng_) == 0;
    uint32_t cpus = bigger ? config_.hypervisor.vcpus + 1 : 0;
    uint32_t mem = bigger ? config_.hypervisor.memory_mib + 128 : 0;
    VMF_ASSIGN_OR_RETURN(Held h, Take(cpus, mem));
    VMF_RETURN_IF_ERROR(Check(h));
    h.vm->Stop();
    return OkStatus();
  }

  // The fault must surface as an error of the call that was running, fast,
  // and say which process died.
  Status ExpectDeath(const Status& st, bool qemu, Clock::time_point since) {
    if (st.ok())
      return Internal(std::string(qemu ? "QEMU" : "the proxy") + " was killed but the call succeeded");
    if (Clock::now() - since > std::chrono::seconds(15)) {
      return Internal("the error took more than 15 s: " + st.ToString());
    }
    if (st.message().find(qemu ? "QEMU" : "proxy") == std::string::npos) {
      return Internal("the error does not say what died: " + st.ToString());
    }
    ++expected_errors_;
    return OkStatus();
  }

  Status KillDuringExec(bool qemu) {
    VMF_ASSIGN_OR_RETURN(Held h, Take());
    auto cmd = std::async(std::launch::async, [&] {
      CollectOptions o;
      o.timeout = std::chrono::seconds(60);
      return ExecAndCollect(h.vm->agent(), {"sleep", "30"}, o);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 500)(rng_)));
    auto since = Clock::now();
    ::kill(qemu ? h.vm->vmm_pid() : h.vm->proxy_pid(), SIGKILL);
    auto r = cmd.get();
    Status st = ExpectDeath(r.ok() ? OkStatus() : h.vm->WithCauses(r.status()), qemu, since);
    h.vm->Stop();
    return st;
  }

  Status KillAtHotplug(bool qemu) {
    VMF_ASSIGN_OR_RETURN(Held h, Take());
    failpoint::SetHook([qemu](std::string_view point, const failpoint::Target& t) {
      if (point == failpoint::kVmHotplug) ::kill(qemu ? t.vmm_pid : t.proxy_pid, SIGKILL);
    });
    auto since = Clock::now();
    auto grew = h.vm->GrowTo(h.vm->cpus() + 1, h.vm->memory_mib() + 128);
    failpoint::SetHook(nullptr);
    Status st = ExpectDeath(grew.status(), qemu, since);
    h.vm->Stop();
    return st;
  }

  Status KillPooled(bool qemu) {
    VMF_ASSIGN_OR_RETURN(auto s, DaemonStatus());
    if (s.ready_size() > 0) {
      const auto& victim = s.ready(std::uniform_int_distribution<int>(0, s.ready_size() - 1)(rng_));
      ::kill(qemu ? victim.vmm_pid() : victim.proxy_pid(), SIGKILL);
    }
    // Clients are never given the broken VM: the next cycle must succeed.
    return NormalCycle();
  }

  Status KillDaemon() {
    VMF_ASSIGN_OR_RETURN(Held h, Take());
    auto before = DaemonStatus();
    if (before.ok()) daemon_failures_ += before->failures();
    daemon_.Signal(SIGKILL);
    (void)daemon_.Wait(Deadline(std::chrono::seconds(10)));
    daemon_.Stop();
    ++daemon_restarts_;
    VMF_RETURN_IF_ERROR(StartDaemon());
    VMF_RETURN_IF_ERROR(WaitPoolFull(std::chrono::seconds(120)).status());
    // The VM we hold outlives the daemon that handed it out.
    VMF_RETURN_IF_ERROR(Check(h).WithContext("the held VM after the daemon restart"));
    h.vm->Stop();
    return OkStatus();
  }

  Status OwnerExits() {
    pid_t child = ::fork();
    if (child < 0) return ErrnoStatus(errno, "fork");
    if (child == 0) {
      // Takes a VM and exits without stopping it; the daemon must.
      auto c = DaemonClient::Connect(socket_);
      if (!c.ok()) ::_exit(1);
      auto vm = (*c)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
      ::_exit(vm.ok() ? 0 : 2);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Internal("the client that exits early got no VM (" + DescribeWaitStatus(status) + ")");
    }
    return NormalCycle();
  }

  // --- the end ---

  void CheckEnd() {
    // Interrupted: the pool is not waited for; Teardown still checks that
    // nothing is left once the daemon is gone.
    if (cancel_->cancelled()) return;
    // The daemon stops orphaned VMs within its owner-check interval.
    auto s = WaitPoolFull(std::chrono::seconds(120), /*none_handed_out=*/true);
    if (!s.ok()) {
      leaks_.push_back("the pool did not settle: " + s.status().ToString());
      return;
    }
    daemon_failures_ += s->failures();
    HostCensus now;
    for (int i = 0; i < 50; ++i) {
      now = TakeCensus(runtime_, daemon_.pid());
      if (now == baseline_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    steady_ = now;
    if (!(now == baseline_))
      leaks_.push_back("census " + now.ToString() + " differs from " + baseline_.ToString());
  }

  void Report() {
    json faults = json::object();
    for (const auto& [k, v] : faults_) faults[k] = v;
    json j = {{"duration_s", elapsed_s_},
              {"seed", seed_},
              {"pool", opts_.pool},
              {"fault_rate", opts_.fault_rate},
              {"interrupted", cancel_->cancelled()},
              {"cycles", cycles_},
              {"cycles_ok", ok_},
              {"faults_injected", faults_total_},
              {"faults", faults},
              {"expected_errors_seen", expected_errors_},
              {"daemon_fail_point_errors_seen", daemon_fail_point_errors_},
              {"daemon_restarts", daemon_restarts_},
              {"pool_refill_failures_in_daemon", daemon_failures_},
              {"unexpected_failures", unexpected_},
              {"unexpected", failures_},
              {"vms_handed_out", seen_ids_.size()},
              {"handed_out_twice", duplicates_},
              {"getvm_ms_p50", Percentile(getvm_ms_, 0.5)},
              {"getvm_ms_p99", Percentile(getvm_ms_, 0.99)},
              {"census_start", baseline_.ToString()},
              {"census_end", steady_.ToString()},
              {"census_after_daemon_exit", final_.ToString()},
              {"leaks", leaks_},
              {"command_line", opts_.command_line}};
    std::printf("%s\n", j.dump(2).c_str());
    if (!opts_.json_path.empty()) {
      Status st = WriteFileAtomic(opts_.json_path, j.dump(2) + "\n", 0644);
      if (!st.ok()) std::fprintf(stderr, "vmfactory soak: %s\n", st.ToString().c_str());
    }
  }

  const SoakOptions& opts_;
  CancelToken* cancel_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  ScopedDir work_;
  std::string runtime_, template_root_, socket_;
  VMConfig config_;
  ChildProcess daemon_;
  HostCensus empty_, baseline_, steady_, final_;
  int cycles_ = 0, ok_ = 0, unexpected_ = 0, faults_total_ = 0, expected_errors_ = 0, daemon_restarts_ = 0;
  int duplicates_ = 0, daemon_fail_point_errors_ = 0;
  uint64_t daemon_failures_ = 0;
  double elapsed_s_ = 0;
  std::map<std::string, int> faults_;
  std::set<std::string> seen_ids_, uuids_;
  std::vector<double> getvm_ms_;
  std::vector<std::string> failures_, leaks_;
};

}  // namespace

int RunSoak(const SoakOptions& options, CancelToken* cancel) {
  if (options.duration_s <= 0) {
    std::fprintf(stderr, "vmfactory soak: --duration must be positive\n");
    return 2;
  }
  if (!(options.fault_rate >= 0 && options.fault_rate <= 1)) {
    std::fprintf(stderr, "vmfactory soak: --fault-rate must be within 0..1\n");
    return 2;
  }
  if (options.pool < 1 || options.pool > 64) {
    std::fprintf(stderr, "vmfactory soak: --pool must be within 1..64\n");
    return 2;
  }
  Soak soak(options, cancel);
  return soak.Run();
}

}  // namespace vmf
