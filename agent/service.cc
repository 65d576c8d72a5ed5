#include "service.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "agent.pb.h"
#include "guest_ops.h"
#include "health.pb.h"
#include "spawn.h"
#include "ttrpc/wire.h"

#ifndef VMF_VERSION
#define VMF_VERSION "0.0.0"
#endif

namespace vmf::agent {
namespace {

constexpr char kAgentService[] = "grpc.AgentService";
constexpr char kHealthService[] = "grpc.Health";

GuestOps::Options GuestOptions(const AgentService::Options& o) {
  GuestOps::Options g;
  g.sysfs_root = o.sysfs_root;
  g.random_device = o.random_device;
  g.online_wait = o.online_wait;
  g.allow_system_changes = o.allow_system_changes;
  return g;
}

Containers::Options ContainerOptions(const AgentService::Options& o) {
  Containers::Options c;
  c.max_containers = o.max_containers;
  c.storage.sysfs_root = o.sysfs_root;
  c.storage.dev_root = o.dev_root;
  c.storage.wait = o.storage_wait;
  c.cgroup.root = o.cgroup_root;
  c.cgroup.parent = o.cgroup_parent;
  return c;
}

// How long RemoveContainer waits for the killed processes (timeout 0: this).
constexpr std::chrono::seconds kDefaultRemoveTimeout{10};
constexpr std::chrono::seconds kMaxRemoveTimeout{60};

}  // namespace

// ---------------------------------------------------------------- plumbing

AgentService::AgentService(ReplyFn reply) : AgentService(std::move(reply), Options()) {}

AgentService::AgentService(ReplyFn reply, Options options)
    : reply_(std::move(reply)),
      opt_(std::move(options)),
      guest_(GuestOptions(opt_)),
      containers_(ContainerOptions(opt_)),
      procs_(TableAnswers(), opt_),
      oom_(OomWatch::Answers{[this](uint32_t id, const std::string& cid) {
                               grpc::OOMEvent e;
                               e.set_container_id(cid);
                               ReplyOk(id, e.SerializeAsString());
                             },
                             [this](uint32_t id, const Status& st) { ReplyError(id, st); }}) {}

ProcessTable::Answers AgentService::TableAnswers() {
  ProcessTable::Answers a;
  a.read = [this](uint32_t id, std::string data) {
    grpc::ReadStreamResponse resp;
    resp.set_data(std::move(data));
    ReplyOk(id, resp.SerializeAsString());
  };
  a.wait = [this](uint32_t id, int exit_status) {
    grpc::WaitProcessResponse resp;
    resp.set_status(exit_status);
    ReplyOk(id, resp.SerializeAsString());
  };
  a.failed = [this](uint32_t id, const Status& status) { ReplyError(id, status); };
  return a;
}

AgentService::~AgentService() = default;

void AgentService::ReplyOk(uint32_t id, const std::string& payload) {
  ::ttrpc::Response r;
  r.set_payload(payload);
  reply_(id, r);
}

void AgentService::ReplyError(uint32_t id, const Status& status) {
  reply_(id, ttrpc::ErrorResponseProto(status.code(), status.message()));
}

template <typename Req>
bool AgentService::Parse(uint32_t id, const std::string& payload, Req* req) {
  if (req->ParseFromString(payload)) return true;
  ReplyError(id, InvalidArgument("cannot parse " + req->GetTypeName()));
  return false;
}

void AgentService::HandleRequest(uint32_t id, const ::ttrpc::Request& req) {
  const std::string& m = req.method();
  const std::string& payload = req.payload();
  if (req.service() == kHealthService) {
    grpc::CheckRequest check;
    if (m == "Check") {
      if (!Parse(id, payload, &check)) return;
      grpc::HealthCheckResponse resp;
      resp.set_status(grpc::HealthCheckResponse::SERVING);
      return ReplyOk(id, resp.SerializeAsString());
    }
    if (m == "Version") {
      if (!Parse(id, payload, &check)) return;
      grpc::VersionCheckResponse resp;
      resp.set_grpc_version("ttrpc");
      resp.set_agent_version(VMF_VERSION);
      return ReplyOk(id, resp.SerializeAsString());
    }
  } else if (req.service() == kAgentService) {
    if (m == "ExecProcess") return DoExec(id, payload);
    if (m == "WaitProcess") return DoWait(id, payload);
    if (m == "SignalProcess") return DoSignal(id, payload);
    if (m == "WriteStdin") return DoWriteStdin(id, payload);
    if (m == "ReadStdout") return DoRead(id, payload, false);
    if (m == "ReadStderr") return DoRead(id, payload, true);
    if (m == "CloseStdin") return DoCloseStdin(id, payload);
    if (m == "OnlineCPUMem") return DoOnlineCpuMem(id, payload);
    if (m == "ReseedRandomDev") return DoReseed(id, payload);
    if (m == "GetGuestDetails") return DoGuestDetails(id, payload);
    if (m == "SetGuestDateTime") return DoSetTime(id, payload);
    if (m == "CreateSandbox") return DoCreateSandbox(id, payload);
    if (m == "CreateContainer") return DoCreateContainer(id, payload);
    if (m == "StartContainer") return DoStartContainer(id, payload);
    if (m == "RemoveContainer") return DoRemoveContainer(id, payload);
    if (m == "TtyWinResize") return DoTtyWinResize(id, payload);
    if (m == "PauseContainer") return DoFreeze(id, payload, true);
    if (m == "ResumeContainer") return DoFreeze(id, payload, false);
    if (m == "UpdateContainer") return DoUpdateContainer(id, payload);
    if (m == "StatsContainer") return DoStatsContainer(id, payload);
    if (m == "GetOOMEvent") return DoGetOomEvent(id, payload);
    if (m == "DestroySandbox") {
      grpc::DestroySandboxRequest r;
      if (!Parse(id, payload, &r)) return;
      return ReplyOk(id, grpc::Empty().SerializeAsString());
    }
  } else {
    return ReplyError(id, Unimplemented("unknown service " + req.service()));
  }
  ReplyError(id, Unimplemented("unknown method " + req.service() + "/" + m));
}

void AgentService::DropDeferred() {
  procs_.DropDeferred();
  oom_.DropWaiters();
}

size_t AgentService::deferred_count() const { return procs_.deferred_count() + oom_.waiter_count(); }

void AgentService::AddPollFds(std::vector<pollfd>* fds) {
  size_t before = fds->size();
  procs_.AddPollFds(fds);
  procs_polled_ = fds->size() - before;
  oom_.AddPollFds(fds);
}

void AgentService::HandlePollFds(const pollfd* fds, size_t count) {
  size_t procs = std::min(procs_polled_, count);
  procs_.HandlePollFds(fds, procs);
  oom_.HandlePollFds(fds + procs, count - procs);
}

void AgentService::ReapChildren() { procs_.ReapChildren(); }

void AgentService::CollectGarbage() { procs_.CollectGarbage(); }

// ---------------------------------------------------------------- processes

void AgentService::DoExec(uint32_t id, const std::string& payload) {
  grpc::ExecProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  // A container's id: the process runs in it. Any other: in the VM.
  Container* c = req.container_id().empty() ? nullptr : containers_.Find(req.container_id());
  // The checks keep this order: it decides which error a bad request gets.
  Status st = procs_.CheckNew(req.container_id(), req.exec_id());
  if (!st.ok()) return ReplyError(id, st);
  if (req.process().args_size() == 0) return ReplyError(id, InvalidArgument("empty Args"));
  if (c != nullptr) {
    st = ValidateContainerId("exec id", req.exec_id());
    if (!st.ok()) return ReplyError(id, st);
  }
  st = procs_.CheckRoom();
  if (!st.ok()) return ReplyError(id, st);
  if (!opt_.allow_exec) return ReplyError(id, Status(Code::kPermissionDenied, "ExecProcess is disabled"));
  SpawnOptions so;
  ContainerJoin join;
  if (c != nullptr) {
    Result<Container*> running = RunningContainer(req.container_id());
    if (!running.ok()) return ReplyError(id, running.status());
    join.init_pid = c->init_pid;
    so.join = &join;
    if (c->cgroup.valid()) so.before_start = [c](pid_t pid) { return c->cgroup.AddProcess(pid); };
  }
  Result<Spawned> s = Spawn(req.process(), so);
  if (!s.ok()) return ReplyError(id, s.status());
  procs_.Add(req.container_id(), req.exec_id(), std::move(*s));
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoWait(uint32_t id, const std::string& payload) {
  grpc::WaitProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = procs_.Wait(id, req.container_id(), req.exec_id());  // answers now or at the exit
  if (!st.ok()) ReplyError(id, st);
}

void AgentService::DoSignal(uint32_t id, const std::string& payload) {
  grpc::SignalProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  if (req.exec_id().empty() && !req.container_id().empty()) {
    if (Container* c = containers_.Find(req.container_id())) {
      // The whole container: every process of it (its init's SIGKILL alone
      // ends the PID namespace, and with it every process inside).
      if (req.signal() >= static_cast<uint32_t>(NSIG))
        return ReplyError(id, InvalidArgument("bad signal " + std::to_string(req.signal())));
      procs_.SignalContainer(c->id, static_cast<int>(req.signal()));
      return ReplyOk(id, grpc::Empty().SerializeAsString());
    }
  }
  Status st = procs_.Signal(req.container_id(), req.exec_id(), req.signal());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoWriteStdin(uint32_t id, const std::string& payload) {
  grpc::WriteStreamRequest req;
  if (!Parse(id, payload, &req)) return;
  Result<size_t> accepted = procs_.WriteStdin(req.container_id(), req.exec_id(), req.data());
  if (!accepted.ok()) return ReplyError(id, accepted.status());
  grpc::WriteStreamResponse resp;
  resp.set_len(static_cast<uint32_t>(*accepted));
  ReplyOk(id, resp.SerializeAsString());
}

void AgentService::DoRead(uint32_t id, const std::string& payload, bool stderr_stream) {
  grpc::ReadStreamRequest req;
  if (!Parse(id, payload, &req)) return;
  auto stream = stderr_stream ? ProcessTable::Stream::kStderr : ProcessTable::Stream::kStdout;
  Status st = procs_.Read(id, req.container_id(), req.exec_id(), stream, req.len());  // now or later
  if (!st.ok()) ReplyError(id, st);
}

void AgentService::DoCloseStdin(uint32_t id, const std::string& payload) {
  grpc::CloseStdinRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = procs_.CloseStdin(req.container_id(), req.exec_id());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

// ---------------------------------------------------------------- guest management

void AgentService::DoOnlineCpuMem(uint32_t id, const std::string& payload) {
  grpc::OnlineCPUMemRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = guest_.OnlineCpuMem(req.nb_cpus(), req.wait(), req.cpu_only());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoReseed(uint32_t id, const std::string& payload) {
  grpc::ReseedRandomDevRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = guest_.ReseedRandom(req.data());
  // A reseed is what makes a clone (or a pooled VM) a machine of its own:
  // its identity is renewed from the new randomness.
  if (st.ok()) st = guest_.RenewIdentity();
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoGuestDetails(uint32_t id, const std::string& payload) {
  grpc::GuestDetailsRequest req;
  if (!Parse(id, payload, &req)) return;
  GuestOps::MemoryDetails mem = guest_.Memory(req.mem_block_size());
  grpc::GuestDetailsResponse resp;
  resp.set_mem_block_size_bytes(mem.block_size_bytes);
  resp.set_support_mem_hotplug_probe(mem.hotplug_probe);
  resp.mutable_agent_details()->set_version(VMF_VERSION);
  resp.mutable_agent_details()->set_init_daemon(::getpid() == 1);
  ReplyOk(id, resp.SerializeAsString());
}

void AgentService::DoSetTime(uint32_t id, const std::string& payload) {
  grpc::SetGuestDateTimeRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = guest_.SetClock(req.sec(), req.usec());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoCreateSandbox(uint32_t id, const std::string& payload) {
  grpc::CreateSandboxRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = guest_.SetHostname(req.hostname());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

// ---------------------------------------------------------------- containers

Result<Container*> AgentService::RunningContainer(const std::string& cid) {
  Container* c = containers_.Find(cid);
  if (c == nullptr) return NotFound("no container " + cid);
  if (c->state != Container::State::kRunning)
    return FailedPrecondition("container " + cid + " is not started");
  if (!procs_.Running(c->id, c->exec_id)) return FailedPrecondition("container " + cid + " has stopped");
  return c;
}

void AgentService::DoCreateContainer(uint32_t id, const std::string& payload) {
  grpc::CreateContainerRequest req;
  if (!Parse(id, payload, &req)) return;
  Status st = containers_.Check(req);
  if (st.ok()) st = procs_.CheckNew(req.container_id(), req.exec_id());
  if (!st.ok()) return ReplyError(id, st);
  if (!opt_.allow_exec || !opt_.allow_system_changes)
    return ReplyError(id, Status(Code::kPermissionDenied, "CreateContainer is disabled"));
  st = containers_.Create(req);
  if (!st.ok()) return ReplyError(id, st);
  oom_.Watch(req.container_id(), &containers_.Find(req.container_id())->cgroup);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoStartContainer(uint32_t id, const std::string& payload) {
  grpc::StartContainerRequest req;
  if (!Parse(id, payload, &req)) return;
  Container* c = containers_.Find(req.container_id());
  if (c == nullptr) return ReplyError(id, NotFound("no container " + req.container_id()));
  if (c->state != Container::State::kCreated)
    return ReplyError(id, FailedPrecondition("container " + c->id + " was started already"));
  Status st = procs_.CheckNew(c->id, c->exec_id);
  if (st.ok()) st = procs_.CheckRoom();
  if (!st.ok()) return ReplyError(id, st);
  // A pod's container joins the namespaces it shares with its sandbox,
  // which must be running.
  for (const auto& [type, other_id] : c->share) {
    Container* other = containers_.Find(other_id);
    if (other == nullptr || other->state != Container::State::kRunning || other->init_pid <= 0) {
      return ReplyError(id, FailedPrecondition("container " + c->id + " shares the " + type +
                                               " namespace of " + other_id + ", which is not running"));
    }
    pid_t& with = type == "ipc"   ? c->init.share_ipc_with
                  : type == "uts" ? c->init.share_uts_with
                                  : c->init.share_pid_with;
    with = other->init_pid;
  }
  SpawnOptions so;
  so.init = &c->init;
  if (c->cgroup.valid()) so.before_start = [c](pid_t pid) { return c->cgroup.AddProcess(pid); };
  // The reply waits for the exec (or its failure), as ExecProcess does.
  Result<Spawned> s = Spawn(c->spec.process(), so);
  if (!s.ok()) return ReplyError(id, s.status().WithContext("container " + c->id));
  c->init_pid = s->pid;
  c->state = Container::State::kRunning;
  procs_.Add(c->id, c->exec_id, std::move(*s));
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoRemoveContainer(uint32_t id, const std::string& payload) {
  grpc::RemoveContainerRequest req;
  if (!Parse(id, payload, &req)) return;
  Container* c = containers_.Find(req.container_id());
  if (c == nullptr) return ReplyError(id, NotFound("no container " + req.container_id()));
  std::chrono::milliseconds timeout = kDefaultRemoveTimeout;
  if (req.timeout() != 0)
    timeout = std::min<std::chrono::milliseconds>(std::chrono::seconds(req.timeout()), kMaxRemoveTimeout);
  procs_.SignalContainer(c->id, SIGKILL);
  // Frozen processes die only once thawed.
  if (c->cgroup.valid()) (void)c->cgroup.Freeze(false);
  Status st = procs_.RemoveContainer(c->id, timeout);
  if (!st.ok()) return ReplyError(id, st);
  oom_.Forget(c->id);
  st = containers_.Remove(c->id);
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoTtyWinResize(uint32_t id, const std::string& payload) {
  grpc::TtyWinResizeRequest req;
  if (!Parse(id, payload, &req)) return;
  std::string eid = req.exec_id();
  if (eid.empty()) {
    if (Container* c = containers_.Find(req.container_id())) eid = c->exec_id;  // the init's
  }
  Status st = procs_.ResizeTerminal(req.container_id(), eid, req.row(), req.column());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoFreeze(uint32_t id, const std::string& payload, bool frozen) {
  std::string cid;
  if (frozen) {
    grpc::PauseContainerRequest req;
    if (!Parse(id, payload, &req)) return;
    cid = req.container_id();
  } else {
    grpc::ResumeContainerRequest req;
    if (!Parse(id, payload, &req)) return;
    cid = req.container_id();
  }
  Container* c = containers_.Find(cid);
  if (c == nullptr) return ReplyError(id, NotFound("no container " + cid));
  if (!c->cgroup.valid())
    return ReplyError(id, Unavailable("container " + cid + " has no cgroup (no freezer)"));
  Status st = c->cgroup.Freeze(frozen);
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoUpdateContainer(uint32_t id, const std::string& payload) {
  grpc::UpdateContainerRequest req;
  if (!Parse(id, payload, &req)) return;
  Container* c = containers_.Find(req.container_id());
  if (c == nullptr) return ReplyError(id, NotFound("no container " + req.container_id()));
  if (!c->cgroup.valid())
    return ReplyError(id, Unavailable("container " + c->id + " has no cgroup: its limits cannot be changed"));
  Status st = c->cgroup.Apply(req.resources());
  if (!st.ok()) return ReplyError(id, st);
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoStatsContainer(uint32_t id, const std::string& payload) {
  grpc::StatsContainerRequest req;
  if (!Parse(id, payload, &req)) return;
  Container* c = containers_.Find(req.container_id());
  if (c == nullptr) return ReplyError(id, NotFound("no container " + req.container_id()));
  Result<grpc::CgroupStats> stats = c->cgroup.Stats();
  if (!stats.ok()) return ReplyError(id, stats.status().WithContext("container " + c->id));
  grpc::StatsContainerResponse resp;
  *resp.mutable_cgroup_stats() = std::move(*stats);
  ReplyOk(id, resp.SerializeAsString());
}

void AgentService::DoGetOomEvent(uint32_t id, const std::string& payload) {
  grpc::GetOOMEventRequest req;
  if (!Parse(id, payload, &req)) return;
  oom_.Request(id);
}

}  // namespace vmf::agent
