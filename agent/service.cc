#include "service.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent.pb.h"
#include "guest_ops.h"
#include "health.pb.h"
#include "log.h"
#include "spawn.h"

#ifndef VMF_VERSION
#define VMF_VERSION "0.0.0"
#endif

namespace vmf::agent {
namespace {

constexpr char kAgentService[] = "grpc.AgentService";
constexpr char kHealthService[] = "grpc.Health";

}  // namespace

// ---------------------------------------------------------------- plumbing

AgentService::AgentService(ReplyFn reply) : AgentService(std::move(reply), Options()) {}

AgentService::AgentService(ReplyFn reply, Options options)
    : reply_(std::move(reply)),
      opt_(std::move(options)),
      guest_(GuestOps::Options{.sysfs_root = opt_.sysfs_root,
                               .random_device = opt_.random_device,
                               .online_wait = opt_.online_wait,
                               .allow_system_changes = opt_.allow_system_changes}) {}

AgentService::~AgentService() {
  for (auto& [key, p] : procs_) {
    if (p->exited) continue;
    ::kill(-p->pid, SIGKILL);
    ::kill(p->pid, SIGKILL);
    int st;
    while (::waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
}

void AgentService::ReplyOk(uint32_t id, const std::string& payload) {
  ::ttrpc::Response r;
  r.set_payload(payload);
  reply_(id, r);
}

void AgentService::ReplyError(uint32_t id, const Status& status) {
  ::ttrpc::Response r;
  r.mutable_status()->set_code(static_cast<int>(status.code()));
  r.mutable_status()->set_message(status.message());
  reply_(id, r);
}

template <typename Req>
bool AgentService::Parse(uint32_t id, const std::string& payload, Req* req) {
  if (req->ParseFromString(payload)) return true;
  ReplyError(id, InvalidArgument("cannot parse " + req->GetTypeName()));
  return false;
}

AgentService::Proc* AgentService::Find(const std::string& container_id, const std::string& exec_id) {
  auto it = procs_.find(Key(container_id, exec_id));
  return it == procs_.end() ? nullptr : it->second.get();
}

static Status UnknownProcess(const std::string& cid, const std::string& eid) {
  return NotFound("no process " + cid + "/" + eid);
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

void AgentService::DropDeferred() {
  for (auto& [key, p] : procs_) {
    p->out.waiters.clear();
    p->err.waiters.clear();
    p->wait_waiters.clear();
  }
}

size_t AgentService::deferred_count() const {
  size_t n = 0;
  for (auto& [key, p] : procs_) n += p->out.waiters.size() + p->err.waiters.size() + p->wait_waiters.size();
  return n;
}

// ---------------------------------------------------------------- processes

void AgentService::DoExec(uint32_t id, const std::string& payload) {
  grpc::ExecProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  Key key(req.container_id(), req.exec_id());
  if (procs_.count(key) != 0)
    return ReplyError(id, AlreadyExists("process " + key.first + "/" + key.second + " exists"));
  if (req.process().args_size() == 0) return ReplyError(id, InvalidArgument("empty Args"));
  if (req.process().terminal()) return ReplyError(id, InvalidArgument("terminal not supported"));
  if (procs_.size() >= opt_.max_processes)
    return ReplyError(id, ResourceExhausted("too many processes (" + std::to_string(procs_.size()) + ")"));
  if (!opt_.allow_exec) return ReplyError(id, Status(Code::kPermissionDenied, "ExecProcess is disabled"));
  Result<Spawned> s = Spawn(req.process());
  if (!s.ok()) return ReplyError(id, s.status());
  auto p = std::make_unique<Proc>();
  p->container_id = key.first;
  p->exec_id = key.second;
  p->pid = s->pid;
  p->stdin_fd = std::move(s->in);
  p->out.fd = std::move(s->out);
  p->err.fd = std::move(s->err);
  procs_.emplace(key, std::move(p));
  poll_refs_.clear();  // procs_ changed: a stale AddPollFds range is ignored
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoWait(uint32_t id, const std::string& payload) {
  grpc::WaitProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  Proc* p = Find(req.container_id(), req.exec_id());
  if (p == nullptr) return ReplyError(id, UnknownProcess(req.container_id(), req.exec_id()));
  if (!p->exited) {
    p->wait_waiters.push_back(id);
    return;
  }
  grpc::WaitProcessResponse resp;
  resp.set_status(p->exit_status);
  p->wait_answered = true;
  ReplyOk(id, resp.SerializeAsString());
}

void AgentService::DoSignal(uint32_t id, const std::string& payload) {
  grpc::SignalProcessRequest req;
  if (!Parse(id, payload, &req)) return;
  Proc* p = Find(req.container_id(), req.exec_id());
  if (p == nullptr) return ReplyError(id, UnknownProcess(req.container_id(), req.exec_id()));
  if (req.signal() >= static_cast<uint32_t>(NSIG))
    return ReplyError(id, InvalidArgument("bad signal " + std::to_string(req.signal())));
  int sig = static_cast<int>(req.signal());
  // The process leads its own session and group: signal the whole group.
  if (::kill(-p->pid, sig) != 0) {
    int e = errno;
    if (e == ESRCH && !p->exited && ::kill(p->pid, sig) == 0) e = 0;
    if (e != 0 && !(e == ESRCH && p->exited)) return ReplyError(id, ErrnoStatus(e, "kill"));
  }
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::DoWriteStdin(uint32_t id, const std::string& payload) {
  grpc::WriteStreamRequest req;
  if (!Parse(id, payload, &req)) return;
  Proc* p = Find(req.container_id(), req.exec_id());
  if (p == nullptr) return ReplyError(id, UnknownProcess(req.container_id(), req.exec_id()));
  if (p->stdin_broken) return ReplyError(id, FailedPrecondition("the process closed its stdin"));
  if (p->stdin_close_requested || !p->stdin_fd) return ReplyError(id, FailedPrecondition("stdin is closed"));
  std::string_view data = req.data();
  size_t accepted = 0;
  if (p->stdin_buf.empty() && !data.empty()) {
    ssize_t n;
    do {
      n = ::write(p->stdin_fd.get(), data.data(), data.size());
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
      accepted = static_cast<size_t>(n);
      data.remove_prefix(accepted);
    } else if (n < 0 && errno != EAGAIN) {
      int e = errno;
      p->stdin_broken = true;
      p->stdin_fd.reset();
      if (e == EPIPE) return ReplyError(id, FailedPrecondition("the process closed its stdin"));
      return ReplyError(id, ErrnoStatus(e, "write stdin"));
    }
  }
  size_t room = opt_.max_stdin_buffer - std::min(opt_.max_stdin_buffer, p->stdin_buf.size());
  size_t take = std::min(room, data.size());
  p->stdin_buf.append(data.substr(0, take));
  accepted += take;
  grpc::WriteStreamResponse resp;
  resp.set_len(static_cast<uint32_t>(accepted));
  ReplyOk(id, resp.SerializeAsString());
}

void AgentService::DoCloseStdin(uint32_t id, const std::string& payload) {
  grpc::CloseStdinRequest req;
  if (!Parse(id, payload, &req)) return;
  Proc* p = Find(req.container_id(), req.exec_id());
  if (p == nullptr) return ReplyError(id, UnknownProcess(req.container_id(), req.exec_id()));
  p->stdin_close_requested = true;
  if (p->stdin_buf.empty()) p->stdin_fd.reset();
  ReplyOk(id, grpc::Empty().SerializeAsString());
}

void AgentService::FlushStdin(Proc* p) {
  while (!p->stdin_buf.empty() && p->stdin_fd) {
    ssize_t n = ::write(p->stdin_fd.get(), p->stdin_buf.data(), p->stdin_buf.size());
    if (n > 0) {
      p->stdin_buf.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    p->stdin_broken = true;  // EPIPE or worse: nobody reads any more
    p->stdin_buf.clear();
    p->stdin_fd.reset();
  }
  if (p->stdin_buf.empty() && p->stdin_close_requested) p->stdin_fd.reset();
}

void AgentService::DoRead(uint32_t id, const std::string& payload, bool stderr_stream) {
  grpc::ReadStreamRequest req;
  if (!Parse(id, payload, &req)) return;
  Proc* p = Find(req.container_id(), req.exec_id());
  if (p == nullptr) return ReplyError(id, UnknownProcess(req.container_id(), req.exec_id()));
  OutStream* s = stderr_stream ? &p->err : &p->out;
  FillOutput(s);
  s->waiters.emplace_back(id, req.len());
  ServeReaders(s);
}

void AgentService::FillOutput(OutStream* s) {
  while (s->fd && s->buf.size() < opt_.max_output_buffer) {
    size_t want = std::min<size_t>(opt_.max_output_buffer - s->buf.size(), 256 * 1024);
    size_t old = s->buf.size();
    s->buf.resize(old + want);
    ssize_t n = ::read(s->fd.get(), s->buf.data() + old, want);
    s->buf.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) Log("reading a process pipe: %s", std::strerror(errno));
    s->eof = true;
    s->fd.reset();
  }
}

std::string AgentService::TakeOutput(OutStream* s, uint32_t len) {
  size_t n = len == 0 ? opt_.max_output_buffer : std::min<size_t>(len, opt_.max_output_buffer);
  n = std::min(n, s->buf.size());
  grpc::ReadStreamResponse resp;
  resp.set_data(s->buf.substr(0, n));
  s->buf.erase(0, n);
  return resp.SerializeAsString();
}

void AgentService::ServeReaders(OutStream* s) {
  while (!s->waiters.empty()) {
    auto [id, len] = s->waiters.front();
    if (!s->buf.empty()) {
      s->waiters.pop_front();
      ReplyOk(id, TakeOutput(s, len));
      FillOutput(s);  // room again: take what the pipe holds now
    } else if (s->eof) {
      s->waiters.pop_front();
      s->eof_delivered = true;
      ReplyOk(id, grpc::ReadStreamResponse().SerializeAsString());
    } else {
      return;
    }
  }
}

void AgentService::OnExit(Proc* p, int wstatus) {
  p->exited = true;
  p->exit_time = Clock::now();
  if (WIFEXITED(wstatus)) {
    p->exit_status = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    p->exit_status = 128 + WTERMSIG(wstatus);
  } else {
    p->exit_status = 255;
  }
  grpc::WaitProcessResponse resp;
  resp.set_status(p->exit_status);
  std::string bytes = resp.SerializeAsString();
  std::vector<uint32_t> waiters;
  waiters.swap(p->wait_waiters);
  for (uint32_t id : waiters) {
    p->wait_answered = true;
    ReplyOk(id, bytes);
  }
}

void AgentService::ReapChildren() {
  if (opt_.reap_all_children) {
    while (true) {
      int st;
      pid_t pid = ::waitpid(-1, &st, WNOHANG);
      if (pid < 0 && errno == EINTR) continue;
      if (pid <= 0) break;
      for (auto& [key, p] : procs_) {
        if (p->pid == pid && !p->exited) {
          OnExit(p.get(), st);
          break;
        }
      }
    }
    return;
  }
  for (auto& [key, p] : procs_) {
    if (p->exited) continue;
    int st;
    pid_t r = ::waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) OnExit(p.get(), st);
  }
}

void AgentService::CollectGarbage() {
  auto now = Clock::now();
  for (auto it = procs_.begin(); it != procs_.end();) {
    Proc* p = it->second.get();
    bool done = p->exited && p->wait_answered && p->out.eof_delivered && p->err.eof_delivered;
    bool expired = p->exited && now - p->exit_time >= opt_.forget_grace;
    if (!done && !expired) {
      ++it;
      continue;
    }
    for (OutStream* s : {&p->out, &p->err})
      for (auto& [id, len] : s->waiters) ReplyError(id, Status(Code::kAborted, "process forgotten"));
    it = procs_.erase(it);
    poll_refs_.clear();
  }
}

void AgentService::AddPollFds(std::vector<pollfd>* fds) {
  poll_refs_.clear();
  for (auto& [key, p] : procs_) {
    Proc* proc = p.get();
    if (proc->stdin_fd && !proc->stdin_buf.empty()) {
      fds->push_back({proc->stdin_fd.get(), POLLOUT, 0});
      poll_refs_.push_back({proc, PollKind::kStdin, proc->stdin_fd.get()});
    }
    if (proc->out.fd && proc->out.buf.size() < opt_.max_output_buffer) {
      fds->push_back({proc->out.fd.get(), POLLIN, 0});
      poll_refs_.push_back({proc, PollKind::kStdout, proc->out.fd.get()});
    }
    if (proc->err.fd && proc->err.buf.size() < opt_.max_output_buffer) {
      fds->push_back({proc->err.fd.get(), POLLIN, 0});
      poll_refs_.push_back({proc, PollKind::kStderr, proc->err.fd.get()});
    }
  }
}

void AgentService::HandlePollFds(const pollfd* fds, size_t count) {
  if (count != poll_refs_.size()) return;  // processes changed since AddPollFds
  std::vector<PollRef> refs;
  refs.swap(poll_refs_);
  for (size_t i = 0; i < count; ++i) {
    if (fds[i].revents == 0) continue;
    PollRef& r = refs[i];
    Proc* p = r.proc;
    switch (r.kind) {
      case PollKind::kStdin:
        if (p->stdin_fd.get() == r.fd) FlushStdin(p);
        break;
      case PollKind::kStdout:
      case PollKind::kStderr: {
        OutStream* s = r.kind == PollKind::kStdout ? &p->out : &p->err;
        if (s->fd.get() != r.fd) break;
        FillOutput(s);
        ServeReaders(s);
        break;
      }
    }
  }
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
