#include "service.h"

#include <unistd.h>

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

}  // namespace

// ---------------------------------------------------------------- plumbing

AgentService::AgentService(ReplyFn reply) : AgentService(std::move(reply), Options()) {}

AgentService::AgentService(ReplyFn reply, Options options)
    : reply_(std::move(reply)),
      opt_(std::move(options)),
      guest_(GuestOptions(opt_)),
      procs_(TableAnswers(), opt_) {}

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

void AgentService::DropDeferred() { procs_.DropDeferred(); }

size_t AgentService::deferred_count() const { return procs_.deferred_count(); }

void AgentService::AddPollFds(std::vector<pollfd>* fds) { procs_.AddPollFds(fds); }

void AgentService::HandlePollFds(const pollfd* fds, size_t count) { procs_.HandlePollFds(fds, count); }

void AgentService::ReapChildren() { procs_.ReapChildren(); }

void AgentService::CollectGarbage() { procs_.CollectGarbage(); }

// ---------------------------------------------------------------- processes

void AgentService::DoExec(uint32_t id, const std::string& payload) {
  grpc::ExecProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  // The checks keep this order: it decides which error a bad request gets.
  Status st = procs_.CheckNew(req.container_id(), req.exec_id());
  if (!st.ok()) return ReplyError(id, st);
  if (req.process().args_size() == 0) return ReplyError(id, InvalidArgument("empty Args"));
  if (req.process().terminal()) return ReplyError(id, InvalidArgument("terminal not supported"));
  st = procs_.CheckRoom();
  if (!st.ok()) return ReplyError(id, st);
  if (!opt_.allow_exec) return ReplyError(id, Status(Code::kPermissionDenied, "ExecProcess is disabled"));
  Result<Spawned> s = Spawn(req.process());
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

}  // namespace vmf::agent
