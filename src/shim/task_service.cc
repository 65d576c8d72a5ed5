#include "shim/task_service.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/io.h"
#include "common/log.h"
#include "container/rootfs.h"
#include "containerd/cgroups_metrics.pb.h"
#include "containerd/events.pb.h"
#include "containerd/runtimeoptions.pb.h"
#include "daemon/acquire.h"

namespace vmf::shim {
namespace {

namespace task = containerd::task::v2;
namespace ev = containerd::events;

Deadline Forever() { return Deadline(std::chrono::hours(24 * 365)); }

// Registers one typed method: parse, call, serialise; a payload that does
// not parse is INVALID_ARGUMENT.
template <typename Req, typename Fn>
void Method(ttrpc::Server* server, const char* name, Fn fn) {
  server->Register("containerd.task.v2.Task", name,
                   [fn, name](const std::string& payload, const ttrpc::Peer&) -> Result<std::string> {
                     Req req;
                     if (!req.ParseFromString(payload)) {
                       return InvalidArgument(std::string("malformed ") + name + " request");
                     }
                     auto out = fn(req);
                     if (!out.ok()) return out.status();
                     return out->SerializeAsString();
                   });
}

// For methods that answer google.protobuf.Empty.
template <typename Fn>
auto EmptyReply(Fn fn) {
  return [fn](const auto& req) -> Result<vmf::wire::Empty> {
    VMF_RETURN_IF_ERROR(fn(req));
    return vmf::wire::Empty();
  };
}

}  // namespace

TaskService::TaskService(ShimOptions options, EventPublisher* events)
    : opt_(std::move(options)), events_(events) {}

TaskService::~TaskService() {
  std::map<std::string, std::unique_ptr<Container>> containers;
  {
    std::lock_guard<std::mutex> l(mu_);
    shutting_down_ = true;
    containers.swap(containers_);
  }
  cv_.notify_all();
  // Stopping the VM ends every guest process and so every agent call the
  // waiters and stdio pumps are blocked in; the VM object stays until the
  // containers that point at it are gone.
  EndVm();
  if (oom_relay_.joinable()) oom_relay_.join();
  if (health_watch_.joinable()) health_watch_.join();
  for (auto& [id, c] : containers) {
    JoinWaiters(c.get());
    Teardown(c.get());
  }
  containers.clear();
  vm_.reset();
}

void TaskService::StopVm() {
  std::lock_guard<std::mutex> ops(ops_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!containers_.empty()) return;
  }
  EndVm();
}

void TaskService::EndVm() {
  {
    std::lock_guard<std::mutex> l(mu_);
    vm_ended_ = true;
  }
  monitors_cv_.notify_all();
  cancel_.Cancel();
  if (vm_) vm_->Stop();
  if (!vm_bundle_.empty()) ::unlink(HandleFile(vm_bundle_).c_str());
}

void TaskService::JoinWaiters(Container* c) {
  for (auto& [eid, p] : c->execs) {
    if (p->waiter.joinable()) p->waiter.join();
  }
  if (c->init.waiter.joinable()) c->init.waiter.join();
}

uint32_t TaskService::TaskPid() const { return vm_ ? static_cast<uint32_t>(vm_->vmm_pid()) : 0; }

Result<std::pair<TaskService::Container*, TaskService::Proc*>> TaskService::FindLocked(
    const std::string& id, const std::string& exec_id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) return NotFound("container " + id + " not found");
  Container* c = it->second.get();
  if (exec_id.empty()) return std::make_pair(c, &c->init);
  auto e = c->execs.find(exec_id);
  if (e == c->execs.end()) return NotFound("process " + exec_id + " of container " + id + " not found");
  return std::make_pair(c, e->second.get());
}

Status TaskService::EnsureVm(const container::BundleSpec& spec, const std::string& bundle) {
  if (vm_) {
    if (!vm_->Healthy()) return Unavailable("the pod's VM " + vm_->id() + " is gone");
    return OkStatus();
  }
  if (spec.kind == container::BundleSpec::Kind::kPodContainer) {
    return FailedPrecondition("pod " + spec.sandbox_id + " has no VM in this shim (its sandbox is not here)");
  }
  AcquireOptions a;
  a.config = opt_.config.vm;
  a.template_root = opt_.config.factory.template_path;
  a.daemon_socket = opt_.config.factory.vm_cache_endpoint;
  a.config.hypervisor.vcpus += spec.extra_vcpus;
  a.config.hypervisor.memory_mib += spec.extra_memory_mib;
  FitCeilings(&a.config.hypervisor);
  StepTimes steps;
  auto vm = AcquireVM(a, &steps, &cancel_);
  if (!vm.ok()) return vm.status().WithContext("cannot get a VM");
  std::string times;
  for (const auto& [name, d] : steps) times += " " + name + "=" + std::to_string(d.count()) + "ms";
  spdlog::info("shim {}: VM {} ready ({} vCPUs, {} MiB):{}", opt_.id, (*vm)->id(), (*vm)->cpus(),
               (*vm)->memory_mib(), times);
  // What `delete` needs if this shim dies: the VM's handle.
  vmfactory::v1::VM h;
  (*vm)->handle().ToProto(&h);
  (void)WriteFileAtomic(HandleFile(bundle), h.SerializeAsString(), 0600);
  vm_bundle_ = bundle;
  vm_ = std::move(*vm);
  StartMonitors();
  return OkStatus();
}

void TaskService::StartMonitors() {
  oom_relay_ = std::thread([this] { RelayOomEvents(); });
  if (opt_.config.vm.agent.health_timeout.count() > 0) health_watch_ = std::thread([this] { WatchHealth(); });
}

void TaskService::RelayOomEvents() {
  for (;;) {
    // One call outstanding at a time; the agent answers it at the next OOM
    // kill, and the call fails when the VM ends.
    Result<std::string> id = vm_->agent().GetOomEvent(Forever());
    if (!id.ok()) {
      if (id.status().code() == Code::kUnimplemented) return;  // an agent without OOM events
      std::unique_lock<std::mutex> l(mu_);
      if (monitors_cv_.wait_for(l, std::chrono::seconds(1), [&] { return vm_ended_ || shutting_down_; }))
        return;
      if (!vm_->Healthy()) return;
      continue;
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = containers_.find(*id);
      if (it == containers_.end()) continue;  // not ours (any more)
      ++it->second->oom_kills;
    }
    spdlog::warn("container {}: a process was killed for lack of memory (OOM)", *id);
    ev::TaskOOM e;
    e.set_container_id(*id);
    events_->Publish("/tasks/oom", e);
  }
}

void TaskService::WatchHealth() {
  const Duration timeout = opt_.config.vm.agent.health_timeout;
  const Duration pause = std::min<Duration>(timeout / 2, std::chrono::seconds(5));
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (monitors_cv_.wait_for(l, pause, [&] { return vm_ended_ || shutting_down_; })) return;
    }
    Status st = vm_->agent().Check(Deadline(timeout));
    if (st.ok()) continue;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (vm_ended_ || shutting_down_) return;
    }
    // Silent for the whole timeout, or its channel gone: its processes
    // cannot be reached any more. Killing the VM ends every call into it,
    // so each task exits (255) and its exit is published.
    spdlog::error("shim {}: the guest of VM {} stopped answering ({}): ending the VM", opt_.id, vm_->id(),
                  vm_->WithCauses(st).ToString());
    cancel_.Cancel();
    return;
  }
}

Result<task::CreateTaskResponse> TaskService::Create(const task::CreateTaskRequest& req) {
  VMF_RETURN_IF_ERROR(ValidateId("container id", req.id()));
  spdlog::info("container {}: create", req.id());
  if (!req.checkpoint().empty()) return Unimplemented("checkpoints are not supported");
  std::lock_guard<std::mutex> ops(ops_mu_);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (shutting_down_) return Unavailable("the shim is shutting down");
    if (containers_.count(req.id())) return AlreadyExists("container " + req.id() + " already exists");
  }
  VMF_ASSIGN_OR_RETURN(container::BundleSpec spec, container::LoadBundleSpec(req.bundle()));
  for (const auto& s : spec.skipped) spdlog::warn("container {}: not in the VM: {}", req.id(), s);

  auto c = std::make_unique<Container>();
  c->id = req.id();
  c->bundle = req.bundle();
  c->init.agent_exec = req.id();
  c->init.stdio = StdioPaths{req.stdin(), req.stdout(), req.stderr(), req.terminal()};
  // Check the stdio before anything is made.
  VMF_ASSIGN_OR_RETURN(c->init.io, ProcessIo::Open(c->init.stdio));

  // The runtime options (`ctr run --runtime-config-path`, CRI's runtime
  // options) may name vmfactory's config file; it applies to the VM, so only
  // before there is one.
  if (!vm_ && req.options().type_url().find("runtimeoptions.v1.Options") != std::string::npos) {
    runtimeoptions::v1::Options o;
    if (!o.ParseFromString(req.options().value())) return InvalidArgument("malformed runtime options");
    if (!o.config_path().empty()) {
      VMF_ASSIGN_OR_RETURN(opt_.config, LoadConfigFile(o.config_path()));
    }
  }
  VMF_RETURN_IF_ERROR(EnsureVm(spec, req.bundle()));
  // The rootfs: containerd's mounts on the bundle's rootfs (in our own mount
  // namespace), copied into the container's disk, unmounted again.
  // (ctr run --rootfs DIR gives no mounts and an absolute root path.)
  std::string rootfs = spec.spec.root().path().empty() ? "rootfs" : spec.spec.root().path();
  if (rootfs[0] != '/') rootfs = req.bundle() + "/" + rootfs;
  std::vector<containerd::types::Mount> mounts(req.rootfs().begin(), req.rootfs().end());
  VMF_RETURN_IF_ERROR(container::MountRootfs(mounts, rootfs));
  container::ContainerTimes times;
  auto guest = container::GuestContainer::Create(vm_.get(), c->id, rootfs, spec.spec, opt_.rootfs_free_mib,
                                                 &times, spec.binds);
  if (!mounts.empty()) (void)container::UnmountRootfs(rootfs);
  if (!guest.ok()) return guest.status();
  c->guest = std::move(*guest);
  spdlog::info("container {}: rootfs image {} ms, disk {} ms, guest create {} ms", c->id, times.image_ms,
               times.disk_ms, times.create_ms);

  Container* raw = c.get();
  {
    std::lock_guard<std::mutex> l(mu_);
    containers_[c->id] = std::move(c);
  }
  ev::TaskCreate e;
  e.set_container_id(raw->id);
  e.set_bundle(raw->bundle);
  for (const auto& m : req.rootfs()) *e.add_rootfs() = m;
  e.mutable_io()->set_stdin(req.stdin());
  e.mutable_io()->set_stdout(req.stdout());
  e.mutable_io()->set_stderr(req.stderr());
  e.mutable_io()->set_terminal(req.terminal());
  e.set_pid(TaskPid());
  events_->Publish("/tasks/create", e);
  task::CreateTaskResponse resp;
  resp.set_pid(TaskPid());
  return resp;
}

void TaskService::Teardown(Container* c) {
  c->guest.reset();  // the guest container, its disk and image
  (void)container::UnmountRootfs(c->bundle + "/rootfs");
}

void TaskService::MarkExited(Container* c, Proc* p, uint32_t status) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (p->status == containerd::types::STOPPED) return;
    p->status = containerd::types::STOPPED;
    p->exit_status = status;
    p->exited_at = NowTimestamp();
  }
  cv_.notify_all();
  spdlog::info("container {}: {} exited with {}", c->id, p->exec_id.empty() ? "init" : p->exec_id, status);
  ev::TaskExit e;
  e.set_container_id(c->id);
  e.set_id(p->exec_id.empty() ? c->id : p->exec_id);
  e.set_pid(TaskPid());
  e.set_exit_status(status);
  *e.mutable_exited_at() = p->exited_at;
  events_->Publish("/tasks/exit", e);
}

void TaskService::StartWaiter(Container* c, Proc* p) {
  p->waiter = std::thread([this, c, p] {
    auto code = vm_->agent().WaitProcess(ProcId(c->id, p->agent_exec), Forever());
    uint32_t status = 255;  // the VM or its agent is gone
    if (code.ok()) {
      status = static_cast<uint32_t>(*code);
      p->io->WaitOutput();  // everything written and the FIFOs closed first
    } else {
      spdlog::warn("container {}: lost process {}: {}", c->id, p->agent_exec,
                   vm_->WithCauses(code.status()).ToString());
      p->io->Stop();
    }
    MarkExited(c, p, status);
  });
}

Result<task::StartResponse> TaskService::Start(const task::StartRequest& req) {
  spdlog::info("container {}: start {}", req.id(), req.exec_id());
  std::lock_guard<std::mutex> ops(ops_mu_);
  Container* c = nullptr;
  Proc* p = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
    std::tie(c, p) = found;
    if (p->status != containerd::types::CREATED) {
      return FailedPrecondition("process " + (p->exec_id.empty() ? c->id : p->exec_id) +
                                " was already started");
    }
    if (!p->exec_id.empty() && c->init.status != containerd::types::RUNNING) {
      return FailedPrecondition("container " + c->id + " is not running");
    }
  }
  if (!vm_->Healthy()) return Unavailable("the pod's VM " + vm_->id() + " is gone");
  if (p->exec_id.empty()) {
    if (Status st = c->guest->Start(); !st.ok()) {
      // As with runc, a process that could not start has ended (127: no
      // such executable, 126: could not run it), so that the task can be
      // deleted.
      MarkExited(c, p, st.code() == Code::kNotFound ? 127 : 126);
      return st;
    }
  } else {
    ExecSpec spec;
    spec.container_id = c->id;
    spec.exec_id = p->agent_exec;
    spec.args.assign(p->process.args().begin(), p->process.args().end());
    spec.env.assign(p->process.env().begin(), p->process.env().end());
    spec.cwd = p->process.cwd();
    if (Status st = vm_->WithCauses(vm_->agent().ExecProcess(spec)); !st.ok()) {
      MarkExited(c, p, st.code() == Code::kNotFound ? 127 : 126);
      return st.WithContext("exec " + p->exec_id);
    }
  }
  p->io->Start(&vm_->agent(), ProcId(c->id, p->agent_exec));
  {
    std::lock_guard<std::mutex> l(mu_);
    p->status = containerd::types::RUNNING;
  }
  // Published before the waiter can publish the exit.
  if (p->exec_id.empty()) {
    ev::TaskStart e;
    e.set_container_id(c->id);
    e.set_pid(TaskPid());
    events_->Publish("/tasks/start", e);
  } else {
    ev::TaskExecStarted e;
    e.set_container_id(c->id);
    e.set_exec_id(p->exec_id);
    e.set_pid(TaskPid());
    events_->Publish("/tasks/exec-started", e);
  }
  StartWaiter(c, p);
  task::StartResponse resp;
  resp.set_pid(TaskPid());
  return resp;
}

Result<task::StateResponse> TaskService::State(const task::StateRequest& req) {
  std::lock_guard<std::mutex> l(mu_);
  VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
  auto [c, p] = found;
  task::StateResponse r;
  r.set_id(p->exec_id.empty() ? c->id : p->exec_id);
  r.set_bundle(c->bundle);
  r.set_pid(TaskPid());
  r.set_status(c->paused && p->status == containerd::types::RUNNING ? containerd::types::PAUSED : p->status);
  r.set_stdin(p->stdio.in);
  r.set_stdout(p->stdio.out);
  r.set_stderr(p->stdio.err);
  r.set_terminal(p->stdio.terminal);
  r.set_exit_status(p->exit_status);
  *r.mutable_exited_at() = p->exited_at;
  r.set_exec_id(p->exec_id);
  return r;
}

Result<task::WaitResponse> TaskService::Wait(const task::WaitRequest& req) {
  std::unique_lock<std::mutex> l(mu_);
  VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
  Proc* p = found.second;
  // The process stays while someone waits: Delete needs it STOPPED.
  cv_.wait(l, [&] { return p->status == containerd::types::STOPPED || shutting_down_; });
  if (p->status != containerd::types::STOPPED) return Unavailable("the shim is shutting down");
  task::WaitResponse r;
  r.set_exit_status(p->exit_status);
  *r.mutable_exited_at() = p->exited_at;
  return r;
}

Status TaskService::Kill(const task::KillRequest& req) {
  Container* c = nullptr;
  Proc* p = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
    std::tie(c, p) = found;
    if (p->status == containerd::types::STOPPED) return OkStatus();  // CRI kills exited tasks
  }
  if (p->status == containerd::types::CREATED) {
    // Never started: it stops here, as runc's created task would.
    MarkExited(c, p, 128 + req.signal());
    return OkStatus();
  }
  const bool all = req.all() && p->exec_id.empty();
  Status st =
      vm_->agent().SignalProcess(ProcId(c->id, all ? "" : p->agent_exec), static_cast<int>(req.signal()));
  if (st.code() == Code::kNotFound) return OkStatus();  // exited meanwhile
  return vm_->WithCauses(st);
}

Result<task::DeleteResponse> TaskService::Delete(const task::DeleteRequest& req) {
  spdlog::info("container {}: delete {}", req.id(), req.exec_id());
  std::lock_guard<std::mutex> ops(ops_mu_);
  std::unique_ptr<Container> gone_container;
  std::unique_ptr<Proc> gone_exec;
  task::DeleteResponse r;
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
    auto [c, p] = found;
    if (p->status == containerd::types::RUNNING) {
      return FailedPrecondition("process " + (p->exec_id.empty() ? c->id : p->exec_id) +
                                " is running: kill it first");
    }
    if (p->exec_id.empty()) {
      for (auto& [eid, e] : c->execs) {
        if (e->status == containerd::types::RUNNING) {
          return FailedPrecondition("exec " + eid + " of container " + c->id + " is still running");
        }
      }
    }
    r.set_pid(TaskPid());
    r.set_exit_status(p->exit_status);
    *r.mutable_exited_at() = p->exited_at;
    if (p->exec_id.empty()) {
      gone_container = std::move(containers_[c->id]);
      containers_.erase(c->id);
    } else {
      gone_exec = std::move(c->execs[p->exec_id]);
      c->execs.erase(p->exec_id);
    }
  }
  if (gone_exec) {
    if (gone_exec->waiter.joinable()) gone_exec->waiter.join();
    return r;
  }
  Container* c = gone_container.get();
  JoinWaiters(c);
  bool last = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    last = containers_.empty();
  }
  // The last container takes the VM with it (nothing else could use it):
  // stopping it first spares the guest-side teardown and the disk's unplug,
  // unless the container has read-write binds to copy back (which needs
  // the guest to let go of them first).
  const bool vm_needed = c->guest->writes_back();
  if (last && !vm_needed) EndVm();
  Teardown(c);
  if (last && vm_needed) EndVm();
  ev::TaskDelete e;
  e.set_container_id(c->id);
  e.set_pid(r.pid());
  e.set_exit_status(r.exit_status());
  *e.mutable_exited_at() = r.exited_at();
  e.set_id(c->id);
  events_->Publish("/tasks/delete", e);
  spdlog::info("container {}: deleted", c->id);
  return r;
}

Status TaskService::Exec(const task::ExecProcessRequest& req) {
  VMF_RETURN_IF_ERROR(ValidateId("exec id", req.exec_id()));
  VMF_ASSIGN_OR_RETURN(grpc::Process process, container::ParseProcess(req.spec().value()));
  auto p = std::make_unique<Proc>();
  p->exec_id = req.exec_id();
  p->agent_exec = req.exec_id();
  p->process = std::move(process);
  p->stdio = StdioPaths{req.stdin(), req.stdout(), req.stderr(), req.terminal()};
  VMF_ASSIGN_OR_RETURN(p->io, ProcessIo::Open(p->stdio));
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), ""));
    Container* c = found.first;
    if (c->init.status != containerd::types::RUNNING) {
      return FailedPrecondition("container " + c->id + " is not running");
    }
    if (c->execs.count(req.exec_id()) || req.exec_id() == c->id) {
      return AlreadyExists("exec " + req.exec_id() + " already exists in container " + c->id);
    }
    c->execs[req.exec_id()] = std::move(p);
  }
  ev::TaskExecAdded e;
  e.set_container_id(req.id());
  e.set_exec_id(req.exec_id());
  events_->Publish("/tasks/exec-added", e);
  return OkStatus();
}

Status TaskService::ResizePty(const task::ResizePtyRequest& req) {
  std::string cid, exec;
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
    if (!found.second->stdio.terminal) return OkStatus();  // no terminal: nothing to resize
    if (found.second->status != containerd::types::RUNNING) return OkStatus();
    cid = found.first->id;
    exec = found.second->agent_exec;
  }
  return vm_->agent().TtyWinResize(ProcId(cid, exec), req.height(), req.width());
}

Status TaskService::CloseIO(const task::CloseIORequest& req) {
  std::lock_guard<std::mutex> l(mu_);
  VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), req.exec_id()));
  if (req.stdin() && found.second->io) found.second->io->CloseStdin();
  return OkStatus();
}

Result<task::PidsResponse> TaskService::Pids(const task::PidsRequest& req) {
  std::lock_guard<std::mutex> l(mu_);
  VMF_RETURN_IF_ERROR(FindLocked(req.id(), "").status());
  task::PidsResponse r;
  r.add_processes()->set_pid(TaskPid());
  return r;
}

Status TaskService::Pause(const task::PauseRequest& req) {
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_RETURN_IF_ERROR(FindLocked(req.id(), "").status());
  }
  VMF_RETURN_IF_ERROR(vm_->agent().PauseContainer(req.id()));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto found = FindLocked(req.id(), ""); found.ok()) found->first->paused = true;
  }
  ev::TaskPaused e;
  e.set_container_id(req.id());
  events_->Publish("/tasks/paused", e);
  return OkStatus();
}

Status TaskService::Resume(const task::ResumeRequest& req) {
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_RETURN_IF_ERROR(FindLocked(req.id(), "").status());
  }
  VMF_RETURN_IF_ERROR(vm_->agent().ResumeContainer(req.id()));
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto found = FindLocked(req.id(), ""); found.ok()) found->first->paused = false;
  }
  ev::TaskResumed e;
  e.set_container_id(req.id());
  events_->Publish("/tasks/resumed", e);
  return OkStatus();
}

Status TaskService::Update(const task::UpdateTaskRequest& req) {
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_RETURN_IF_ERROR(FindLocked(req.id(), "").status());
  }
  VMF_ASSIGN_OR_RETURN(grpc::LinuxResources r, container::ParseResources(req.resources().value()));
  return vm_->agent().UpdateContainer(req.id(), r);
}

Result<task::StatsResponse> TaskService::Stats(const task::StatsRequest& req) {
  uint64_t oom_kills = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    VMF_ASSIGN_OR_RETURN(auto found, FindLocked(req.id(), ""));
    oom_kills = found.first->oom_kills;
  }
  Result<grpc::StatsContainerResponse> got = vm_->agent().StatsContainer(req.id());
  if (!got.ok()) return vm_->WithCauses(got.status()).WithContext("stats of container " + req.id());
  // The guest's cgroup figures in the form runc's shim gives them (CRI and
  // `ctr task metrics` read cgroups v1 Metrics whatever the host has).
  const grpc::CgroupStats& cg = got->cgroup_stats();
  io::containerd::cgroups::v1::Metrics m;
  m.mutable_pids()->set_current(cg.pids_stats().current());
  m.mutable_pids()->set_limit(cg.pids_stats().limit());
  auto* cpu = m.mutable_cpu()->mutable_usage();
  cpu->set_total(cg.cpu_stats().cpu_usage().total_usage());
  cpu->set_kernel(cg.cpu_stats().cpu_usage().usage_in_kernelmode());
  cpu->set_user(cg.cpu_stats().cpu_usage().usage_in_usermode());
  for (uint64_t v : cg.cpu_stats().cpu_usage().percpu_usage()) cpu->add_per_cpu(v);
  auto* mem = m.mutable_memory();
  mem->set_cache(cg.memory_stats().cache());
  mem->set_total_cache(cg.memory_stats().cache());
  auto* usage = mem->mutable_usage();
  usage->set_usage(cg.memory_stats().usage().usage());
  usage->set_max(cg.memory_stats().usage().max_usage());
  usage->set_limit(cg.memory_stats().usage().limit());
  usage->set_failcnt(cg.memory_stats().usage().failcnt());
  m.mutable_memory_oom_control()->set_oom_kill(oom_kills);
  task::StatsResponse r;
  r.mutable_stats()->set_type_url("io.containerd.cgroups.v1.Metrics");
  r.mutable_stats()->set_value(m.SerializeAsString());
  return r;
}

Result<task::ConnectResponse> TaskService::Connect(const task::ConnectRequest&) {
  task::ConnectResponse r;
  r.set_shim_pid(static_cast<uint32_t>(::getpid()));
  std::lock_guard<std::mutex> l(mu_);
  r.set_task_pid(TaskPid());
  r.set_version("vmfactory " VMF_VERSION);
  return r;
}

Status TaskService::Shutdown(const task::ShutdownRequest&) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!containers_.empty()) return OkStatus();  // the pod lives on
  }
  if (on_shutdown_) on_shutdown_();
  return OkStatus();
}

void TaskService::Register(ttrpc::Server* s) {
  Method<task::CreateTaskRequest>(s, "Create", [this](const auto& r) { return Create(r); });
  Method<task::StartRequest>(s, "Start", [this](const auto& r) { return Start(r); });
  Method<task::StateRequest>(s, "State", [this](const auto& r) { return State(r); });
  Method<task::WaitRequest>(s, "Wait", [this](const auto& r) { return Wait(r); });
  Method<task::KillRequest>(s, "Kill", EmptyReply([this](const auto& r) { return Kill(r); }));
  Method<task::DeleteRequest>(s, "Delete", [this](const auto& r) { return Delete(r); });
  Method<task::ExecProcessRequest>(s, "Exec", EmptyReply([this](const auto& r) { return Exec(r); }));
  Method<task::ResizePtyRequest>(s, "ResizePty", EmptyReply([this](const auto& r) { return ResizePty(r); }));
  Method<task::CloseIORequest>(s, "CloseIO", EmptyReply([this](const auto& r) { return CloseIO(r); }));
  Method<task::PidsRequest>(s, "Pids", [this](const auto& r) { return Pids(r); });
  Method<task::PauseRequest>(s, "Pause", EmptyReply([this](const auto& r) { return Pause(r); }));
  Method<task::ResumeRequest>(s, "Resume", EmptyReply([this](const auto& r) { return Resume(r); }));
  Method<task::UpdateTaskRequest>(s, "Update", EmptyReply([this](const auto& r) { return Update(r); }));
  Method<task::StatsRequest>(s, "Stats", [this](const auto& r) { return Stats(r); });
  Method<task::ConnectRequest>(s, "Connect", [this](const auto& r) { return Connect(r); });
  Method<task::ShutdownRequest>(s, "Shutdown", EmptyReply([this](const auto& r) { return Shutdown(r); }));
  // Checkpoint is not registered: the server answers UNIMPLEMENTED.
}

}  // namespace vmf::shim
