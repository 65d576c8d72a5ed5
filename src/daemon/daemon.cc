#include "daemon/daemon.h"

#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/census.h"
#include "common/cgroup.h"
#include "common/io.h"
#include "common/process.h"
#include "common/procfs.h"
#include "common/scoped.h"
#include "common/scoped_dir.h"
#include "common/uid_lease.h"
#include "daemon/client.h"
#include "daemon/metrics.h"
#include "daemon/request.h"
#include "factory.pb.h"
#include "factory/cache.h"
#include "factory/factory.h"
#include "ttrpc/server.h"

namespace vmf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The start time of a process, which tells a process from a later one that
// reuses its pid. 0 if it is gone.
uint64_t StartTime(pid_t pid) {
  auto st = ReadProcStat(pid);
  return st ? st->start_time : 0;
}

// Removes what is left of a VM's cgroup (its processes are gone).
void RemoveCgroup(const std::string& id, const std::vector<std::string>& dirs) {
  if (dirs.empty()) return;
  auto cg = VmCgroup::Adopt(id, dirs);
  if (!cg.ok()) spdlog::warn("cgroup of VM {}: {}", id, cg.status().ToString());
}

struct HandedOutVm {
  VMHandle handle;
  pid_t owner = -1;
  uint64_t owner_start = 0;
  UniqueFd owner_pidfd;  // readable once the owner has exited
};

class Daemon {
 public:
  Daemon(const DaemonOptions& opts, CancelToken* stop) : opts_(opts), stop_(stop) {}

  Status Run() {
    // The first log line, before any thread of ours logs: it sets up
    // spdlog's registry on this thread (libspdlog's own lazy set-up is not
    // visible to ThreadSanitizer, which reports racing first uses).
    spdlog::info("daemon starting on {}", opts_.socket_path);
    std::string runtime = opts_.vm.runtime_dir.empty() ? DefaultRuntimeDir() : opts_.vm.runtime_dir;
    records_dir_ = runtime + "/daemon";
    VMF_RETURN_IF_ERROR(MakeDirs(records_dir_));
    // Pool VMs live under a runtime dir of the daemon's own, so that what a
    // killed instance left behind can be told apart from other VMs.
    vm_config_ = opts_.vm;
    vm_config_.runtime_dir = records_dir_ + "/pool";
    VMF_RETURN_IF_ERROR(MakeDirs(vm_config_.runtime_dir + "/vm"));
    VMF_RETURN_IF_ERROR(MakeDirs(fs::path(opts_.socket_path).parent_path().string()));
    // 1. One daemon per socket: a lock held for our lifetime decides, so a
    //    socket left by a dead daemon can be taken over safely.
    std::string lock_path = opts_.socket_path + ".lock";
    lock_ = UniqueFd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock_) return ErrnoStatus(errno, "open " + lock_path);
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
      return AlreadyExists("another vmfactory daemon is serving " + opts_.socket_path);
    }
    if (fs::exists(opts_.socket_path)) {
      spdlog::info("taking over the stale socket {}", opts_.socket_path);
      ::unlink(opts_.socket_path.c_str());
    }
    VMF_ASSIGN_OR_RETURN(UniqueFd listen_fd, ListenUnix(opts_.socket_path));

    // 2. VMs handed out by an earlier instance: keep watching their owners.
    //    Anything else an earlier instance left (its pool) is stopped.
    AdoptRecords();
    ReapLeftovers();

    // 3. The base source and the pool.
    std::unique_ptr<Factory> base;
    if (opts_.use_template) {
      auto t =
          NewTemplateFactory(vm_config_, opts_.template_path, opts_.deps, {.target = opts_.restore_targets});
      if (t.ok()) {
        base = std::move(*t);
      } else {
        spdlog::info("no usable template ({}); the pool cold-boots", t.status().ToString());
      }
    }
    if (!base) base = NewDirectFactory(vm_config_, opts_.deps);
    if (opts_.cache_number > 0) {
      CacheOptions co;
      co.target = opts_.cache_number;
      co.parallelism = opts_.parallelism;
      factory_ = std::make_unique<VMCache>(std::move(base), co, &metrics_);
    } else {
      factory_ = std::move(base);
    }

    // 4. Metrics over HTTP.
    if (!opts_.metrics_address.empty()) VMF_RETURN_IF_ERROR(StartMetrics());

    // 5. The API.
    RegisterApi();
    watcher_ = std::jthread([this] { WatchHandedOut(); });
    Status st;
    {
      ScopedCancelAction shutdown(stop_, [this] { server_.Shutdown(); });
      const FactoryState state = factory_->State();
      spdlog::info("serving on {} (pool of {}, {} restore targets, base: {})", opts_.socket_path,
                   opts_.cache_number, state.restore ? state.restore->target : 0, SourceName(state.base));
      st = server_.Serve(std::move(listen_fd));
    }

    // 6. On the way out: stop serving, stop the pool, remove the socket.
    spdlog::info("shutting down");
    ::unlink(opts_.socket_path.c_str());
    {
      std::lock_guard<std::mutex> l(mu_);
      quitting_ = true;
    }
    cv_.notify_all();
    if (watcher_.joinable()) watcher_.join();
    if (quit_thread_.joinable()) quit_thread_.join();
    factory_->Close();
    factory_.reset();
    if (http_) {
      http_->stop();
      if (http_thread_.joinable()) http_thread_.join();
    }
    // Handed-out VMs outlive us (their owners stop them), but one that has
    // already exited is our zombie child until we reap it: do, rather than
    // leave it to init.
    int status = 0;
    while (::waitpid(-1, &status, WNOHANG) > 0) {
    }
    ::unlink(lock_path.c_str());
    return st;
  }

 private:
  Status StartMetrics() {
    auto colon = opts_.metrics_address.rfind(':');
    if (colon == std::string::npos)
      return InvalidArgument("metrics.address: '" + opts_.metrics_address + "' is not host:port");
    std::string host = opts_.metrics_address.substr(0, colon);
    int port = std::atoi(opts_.metrics_address.c_str() + colon + 1);
    http_ = std::make_unique<httplib::Server>();
    http_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.Render() + VmUsageMetrics(), "text/plain; version=0.0.4");
    });
    if (!http_->bind_to_port(host, port)) {
      return Unavailable("metrics.address: cannot listen on " + opts_.metrics_address);
    }
    http_thread_ = std::jthread([this] { http_->listen_after_bind(); });
    spdlog::info("metrics on http://{}/metrics", opts_.metrics_address);
    return OkStatus();
  }

  void RegisterApi() {
    server_.Register(kFactoryService, "GetVM", [this](const std::string& payload, const ttrpc::Peer& peer) {
      return GetVM(payload, peer);
    });
    server_.Register(kFactoryService, "Status",
                     [this](const std::string&, const ttrpc::Peer&) -> Result<std::string> {
                       return StatusProto().SerializeAsString();
                     });
    server_.Register(kFactoryService, "Config",
                     [this](const std::string&, const ttrpc::Peer&) -> Result<std::string> {
                       vmfactory::v1::ConfigResponse c;
                       c.set_cpus(opts_.vm.hypervisor.vcpus);
                       c.set_memory_mib(opts_.vm.hypervisor.memory_mib);
                       c.set_kernel(opts_.vm.hypervisor.kernel);
                       c.set_initrd(opts_.vm.hypervisor.initrd);
                       c.set_cache_target(opts_.cache_number);
                       c.set_template_enabled(opts_.use_template);
                       c.set_template_path(opts_.template_path);
                       return c.SerializeAsString();
                     });
    server_.Register(kFactoryService, "Quit",
                     [this](const std::string&, const ttrpc::Peer& peer) -> Result<std::string> {
                       spdlog::info("quit requested by pid {}", peer.pid);
                       // Reply first; stop a moment later from another thread.
                       std::lock_guard<std::mutex> l(mu_);
                       if (!quit_thread_.joinable()) {
                         quit_thread_ = std::jthread([this] {
                           std::this_thread::sleep_for(std::chrono::milliseconds(50));
                           stop_->Cancel();
                         });
                       }
                       return vmfactory::v1::Empty().SerializeAsString();
                     });
  }

  Result<std::string> GetVM(const std::string& payload, const ttrpc::Peer& peer) {
    VMF_ASSIGN_OR_RETURN(VMConfig request, DecodeGetVMRequest(payload, vm_config_, opts_.deps.backend));
    if (peer.pid <= 0) return FailedPrecondition("cannot tell which process asks (no SO_PEERCRED)");

    auto start = Clock::now();
    VMF_ASSIGN_OR_RETURN(Acquired got, factory_->GetVM(request, nullptr, stop_));
    metrics_.ObserveGetVM(got.source, std::chrono::duration<double>(Clock::now() - start).count());
    const std::string source(SourceName(got.source));

    // Record the owner before letting go, so that the VM is never unowned.
    HandedOutVm rec;
    rec.owner = peer.pid;
    rec.owner_start = StartTime(peer.pid);
    rec.owner_pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, peer.pid, 0)));
    rec.handle = got.vm->Release();
    SaveRecord(rec);
    vmfactory::v1::VM out;
    rec.handle.ToProto(&out);
    out.set_source(source);
    spdlog::info("VM {} handed to pid {} (from {})", rec.handle.id, peer.pid, source);
    {
      std::lock_guard<std::mutex> l(mu_);
      handed_[rec.handle.id] = std::move(rec);
      metrics_.SetHandedOut(static_cast<int>(handed_.size()));
    }
    return out.SerializeAsString();
  }

  vmfactory::v1::StatusResponse StatusProto() {
    vmfactory::v1::StatusResponse s;
    s.set_daemon_pid(::getpid());
    const FactoryState state = factory_->State();
    s.set_base_source(std::string(SourceName(state.base)));
    s.set_target(opts_.cache_number);
    if (state.pool) {
      const PoolState& cs = *state.pool;
      for (const auto& h : cs.ready) {
        auto* e = s.add_ready();
        e->set_id(h.id);
        e->set_vmm_pid(h.vmm_pid);
        e->set_proxy_pid(h.proxy_pid);
        SetUsage(h, e->mutable_usage());
      }
      s.set_booting(cs.booting);
      s.set_failures(cs.failures);
      s.set_last_error(cs.last_error);
      s.set_retry_in_ms(cs.retry_in.count());
      s.set_replaced(cs.replaced);
    }
    if (state.restore) {
      const RestoreTargetState& rs = *state.restore;
      auto* r = s.mutable_restore();
      r->set_target(rs.target);
      r->set_starting(rs.starting);
      r->set_taken(rs.taken);
      r->set_failures(rs.failures);
      r->set_replaced(rs.replaced);
      r->set_last_error(rs.last_error);
      r->set_retry_in_ms(rs.retry_in.count());
      for (const WaitingTarget& w : rs.waiting) {
        auto* e = r->add_waiting();
        e->set_id(w.vm.id);
        e->set_vmm_pid(w.vm.vmm_pid);
        e->set_proxy_pid(w.vm.proxy_pid);
        e->set_pss_bytes(w.pss_bytes);
        SetUsage(w.vm, e->mutable_usage());
      }
    }
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, rec] : handed_) {
      auto* h = s.add_handed_out();
      h->set_id(id);
      h->set_vmm_pid(rec.handle.vmm_pid);
      h->set_proxy_pid(rec.handle.proxy_pid);
      h->set_owner_pid(rec.owner);
      SetUsage(rec.handle, h->mutable_usage());
    }
    return s;
  }

  // What the VM's cgroup counts, read from the dirs in its handle.
  static void SetUsage(const VMHandle& h, vmfactory::v1::VmUsage* out) {
    if (h.cgroup_dirs.empty()) return;
    const CgroupUsage u = VmCgroup::UsageOf(h.cgroup_dirs);
    out->set_memory_bytes(u.memory_bytes);
    out->set_memory_limit_bytes(u.memory_limit_bytes);
    out->set_pids(u.pids);
    out->set_oom_kills(u.oom_kills);
  }

  // Prometheus text for each VM's usage (pool and handed out), after the
  // daemon's own metrics.
  std::string VmUsageMetrics() {
    const vmfactory::v1::StatusResponse s = StatusProto();
    struct Row {
      std::string id;
      const char* state;
      const vmfactory::v1::VmUsage* usage;
    };
    std::vector<Row> rows;
    for (const auto& r : s.ready()) {
      if (r.has_usage()) rows.push_back({r.id(), "ready", &r.usage()});
    }
    for (const auto& h : s.handed_out()) {
      if (h.has_usage()) rows.push_back({h.id(), "handed_out", &h.usage()});
    }
    for (const auto& w : s.restore().waiting()) {
      if (w.has_usage()) rows.push_back({w.id(), "restore_target", &w.usage()});
    }
    std::string out = RestoreTargetMetrics(s);
    auto family = [&](const char* name, const char* type, const char* help, auto value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
      for (const Row& r : rows) {
        out += std::string(name) + "{vm=\"" + r.id + "\",state=\"" + r.state + "\"} " +
               std::to_string(value(*r.usage)) + "\n";
      }
    };
    family("vmfactory_vm_memory_bytes", "gauge", "Memory charged to a VM's cgroup (QEMU + proxy).",
           [](const vmfactory::v1::VmUsage& u) { return u.memory_bytes(); });
    family("vmfactory_vm_memory_limit_bytes", "gauge", "A VM's memory limit (0: none).",
           [](const vmfactory::v1::VmUsage& u) { return u.memory_limit_bytes(); });
    family("vmfactory_vm_pids", "gauge", "Tasks in a VM's cgroup.",
           [](const vmfactory::v1::VmUsage& u) { return u.pids(); });
    family("vmfactory_vm_oom_kills_total", "counter", "Processes of a VM killed by its memory limit.",
           [](const vmfactory::v1::VmUsage& u) { return u.oom_kills(); });
    return out;
  }

  // Prometheus text for the restore targets: how many, and what each costs.
  static std::string RestoreTargetMetrics(const vmfactory::v1::StatusResponse& s) {
    if (!s.has_restore()) return "";
    const auto& r = s.restore();
    auto one = [](const char* name, const char* type, const char* help, uint64_t value) {
      return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name +
             " " + std::to_string(value) + "\n";
    };
    std::string out = one("vmfactory_restore_targets_waiting", "gauge",
                          "Template clones started and waiting for their state.", r.waiting_size());
    out += one("vmfactory_restore_targets_target", "gauge", "Restore targets the daemon keeps.",
               static_cast<uint64_t>(r.target()));
    out += one("vmfactory_restore_targets_taken_total", "counter", "Restore targets handed to a clone.",
               r.taken());
    out += one("vmfactory_restore_target_failures_total", "counter",
               "Failed attempts to make a restore target.", r.failures());
    out +=
        "# HELP vmfactory_restore_target_pss_bytes PSS of a waiting restore target (QEMU + proxy).\n"
        "# TYPE vmfactory_restore_target_pss_bytes gauge\n";
    for (const auto& w : r.waiting()) {
      out +=
          "vmfactory_restore_target_pss_bytes{vm=\"" + w.id() + "\"} " + std::to_string(w.pss_bytes()) + "\n";
    }
    return out;
  }

  // --- handed-out VMs: records survive a daemon restart ---

  std::string RecordPath(const std::string& id) const { return records_dir_ + "/handed-" + id + ".json"; }

  void SaveRecord(const HandedOutVm& rec) {
    json j = {{"vm", rec.handle.ToJson()}, {"owner_pid", rec.owner}, {"owner_start", rec.owner_start}};
    Status st = WriteFileAtomic(RecordPath(rec.handle.id), j.dump() + "\n", 0600);
    if (!st.ok()) spdlog::warn("cannot record handed-out VM {}: {}", rec.handle.id, st.ToString());
  }

  void AdoptRecords() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(records_dir_, ec)) {
      std::string name = e.path().filename();
      if (name.rfind("handed-", 0) != 0) continue;
      auto text = ReadFile(e.path(), 64 * 1024);
      json j = text.ok() ? json::parse(*text, nullptr, false) : json();
      HandedOutVm rec;
      auto handle = j.is_object() && j.contains("vm") ? VMHandle::FromJson(j["vm"], e.path().string())
                                                      : Result<VMHandle>(DataLoss("no vm"));
      bool ok = handle.ok();
      if (ok) {
        rec.handle = std::move(*handle);
        try {
          rec.owner = j.at("owner_pid").get<pid_t>();
          rec.owner_start = j.at("owner_start").get<uint64_t>();
        } catch (const json::exception&) {
          ok = false;
        }
      }
      if (!ok) {
        spdlog::warn("ignoring unreadable record {}", e.path().string());
        fs::remove(e.path(), ec);
        continue;
      }
      if (!ValidateId("VM id", rec.handle.id).ok()) continue;
      if (StartTime(rec.owner) == rec.owner_start && rec.owner_start != 0) {
        rec.owner_pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, rec.owner, 0)));
      } else {
        rec.owner = -1;  // gone: the watcher stops the VM
      }
      spdlog::info("found VM {} handed out by an earlier daemon (owner pid {})", rec.handle.id, rec.owner);
      handed_[rec.handle.id] = std::move(rec);
    }
  }

  // VMs of our pool dir that no record names were pooled (or being made, or
  // being handed out) by a dead instance: nobody has them, so they go.
  void ReapLeftovers() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(vm_config_.runtime_dir + "/vm", ec)) {
      const std::string id = e.path().filename();
      if (handed_.count(id) != 0) continue;
      const std::string dir = e.path().string();
      StopProcessesMentioning(dir, std::chrono::milliseconds(200));
      std::error_code rm_ec;
      fs::remove_all(dir, rm_ec);
      if (ValidateId("VM id", id).ok()) RemoveCgroup(id, VmCgroup::DirsFor(id));
      spdlog::warn("stopped VM {} left by an earlier daemon{}", id,
                   rm_ec ? " (" + rm_ec.message() + ")" : "");
    }
  }

  static bool OwnerGone(const HandedOutVm& rec) {
    if (rec.owner <= 0) return true;
    if (rec.owner_pidfd) {
      pollfd p{rec.owner_pidfd.get(), POLLIN, 0};
      return ::poll(&p, 1, 0) > 0;
    }
    return StartTime(rec.owner) != rec.owner_start;
  }

  void WatchHandedOut() {
    std::unique_lock<std::mutex> l(mu_);
    while (!quitting_) {
      cv_.wait_for(l, opts_.owner_check_interval);
      std::vector<HandedOutVm> done, orphaned;
      for (auto it = handed_.begin(); it != handed_.end();) {
        HandedOutVm& rec = it->second;
        // Our children (VMs this instance made) are reaped here.
        int status = 0;
        ::waitpid(rec.handle.vmm_pid, &status, WNOHANG);
        ::waitpid(rec.handle.proxy_pid, &status, WNOHANG);
        if (!ProcessAlive(rec.handle.vmm_pid)) {
          done.push_back(std::move(rec));
          it = handed_.erase(it);
        } else if (OwnerGone(rec)) {
          orphaned.push_back(std::move(rec));
          it = handed_.erase(it);
        } else {
          ++it;
        }
      }
      if (done.empty() && orphaned.empty()) continue;
      metrics_.SetHandedOut(static_cast<int>(handed_.size()));
      l.unlock();
      for (auto& rec : orphaned) {
        spdlog::warn("owner pid {} of VM {} exited without stopping it; stopping it", rec.owner,
                     rec.handle.id);
        StopHandedOut(rec.handle);
      }
      for (auto& rec : done) {
        // Stopped by its owner (or died): make sure nothing of it is left.
        RemoveVmRemains(rec.handle);
        std::error_code ec;
        fs::remove(RecordPath(rec.handle.id), ec);
      }
      for (auto& rec : orphaned) {
        std::error_code ec;
        fs::remove(RecordPath(rec.handle.id), ec);
      }
      l.lock();
    }
  }

  void StopHandedOut(const VMHandle& h) { StopVmOf(h, vm_config_, opts_.deps); }

  const DaemonOptions& opts_;
  CancelToken* stop_;
  std::string records_dir_;
  VMConfig vm_config_;  // opts_.vm with the pool's runtime dir
  UniqueFd lock_;
  Metrics metrics_;
  std::unique_ptr<Factory> factory_;
  ttrpc::Server server_;
  std::unique_ptr<httplib::Server> http_;
  std::jthread http_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool quitting_ = false;
  std::map<std::string, HandedOutVm> handed_;
  std::jthread watcher_;
  std::jthread quit_thread_;
};

}  // namespace

Status RunDaemon(const DaemonOptions& opts, CancelToken* stop) {
  Daemon d(opts, stop);
  return d.Run();
}

}  // namespace vmf
