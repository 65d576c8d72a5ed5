#include "process_table.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "log.h"

namespace vmf::agent {
namespace {

Status UnknownProcess(const std::string& cid, const std::string& eid) {
  return NotFound("no process " + cid + "/" + eid);
}

}  // namespace

ProcessTable::ProcessTable(Answers answers, Limits limits) : answers_(std::move(answers)), limits_(limits) {}

ProcessTable::~ProcessTable() {
  for (auto& [key, p] : procs_) {
    if (p->exited) continue;
    ::kill(-p->pid, SIGKILL);
    ::kill(p->pid, SIGKILL);
    int st = 0;
    while (::waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
    }
  }
}

ProcessTable::Proc* ProcessTable::Find(const std::string& cid, const std::string& eid) {
  auto it = procs_.find(Key(cid, eid));
  return it == procs_.end() ? nullptr : it->second.get();
}

Status ProcessTable::CheckNew(const std::string& cid, const std::string& eid) const {
  if (procs_.count(Key(cid, eid)) != 0) return AlreadyExists("process " + cid + "/" + eid + " exists");
  return OkStatus();
}

Status ProcessTable::CheckRoom() const {
  if (procs_.size() >= limits_.max_processes)
    return ResourceExhausted("too many processes (" + std::to_string(procs_.size()) + ")");
  return OkStatus();
}

void ProcessTable::Add(const std::string& cid, const std::string& eid, Spawned process) {
  auto p = std::make_unique<Proc>();
  p->container_id = cid;
  p->exec_id = eid;
  p->pid = process.pid;
  p->stdin_fd = std::move(process.in);
  p->out.fd = std::move(process.out);
  p->err.fd = std::move(process.err);
  p->err.eof = !p->err.fd;  // a terminal has no stderr: EOF at once
  p->tty = std::move(process.tty);
  procs_.emplace(Key(cid, eid), std::move(p));
  poll_refs_.clear();  // procs_ changed: a stale AddPollFds range is ignored
}

// ---------------------------------------------------------------- requests

Status ProcessTable::Read(uint32_t id, const std::string& cid, const std::string& eid, Stream stream,
                          uint32_t len) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  OutStream* s = stream == Stream::kStderr ? &p->err : &p->out;
  FillOutput(s);
  s->waiters.emplace_back(id, len);
  ServeReaders(s);
  return OkStatus();
}

Status ProcessTable::Wait(uint32_t id, const std::string& cid, const std::string& eid) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  if (!p->exited) {
    p->wait_waiters.push_back(id);
    return OkStatus();
  }
  p->wait_answered = true;
  answers_.wait(id, p->exit_status);
  return OkStatus();
}

Status ProcessTable::Signal(const std::string& cid, const std::string& eid, uint32_t signal) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  if (signal >= static_cast<uint32_t>(NSIG)) return InvalidArgument("bad signal " + std::to_string(signal));
  int sig = static_cast<int>(signal);
  // The process leads its own session and group: signal the whole group.
  if (::kill(-p->pid, sig) != 0) {
    int e = errno;
    if (e == ESRCH && !p->exited && ::kill(p->pid, sig) == 0) e = 0;
    if (e != 0 && !(e == ESRCH && p->exited)) return ErrnoStatus(e, "kill");
  }
  return OkStatus();
}

Result<size_t> ProcessTable::WriteStdin(const std::string& cid, const std::string& eid,
                                        std::string_view data) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  if (p->stdin_broken) return FailedPrecondition("the process closed its stdin");
  if (p->stdin_close_requested || !p->stdin_fd) return FailedPrecondition("stdin is closed");
  size_t accepted = 0;
  if (p->stdin_buf.empty() && !data.empty()) {
    ssize_t n = 0;
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
      if (e == EPIPE) return FailedPrecondition("the process closed its stdin");
      return ErrnoStatus(e, "write stdin");
    }
  }
  size_t room = limits_.max_stdin_buffer - std::min(limits_.max_stdin_buffer, p->stdin_buf.size());
  size_t take = std::min(room, data.size());
  p->stdin_buf.append(data.substr(0, take));
  accepted += take;
  return accepted;
}

Status ProcessTable::CloseStdin(const std::string& cid, const std::string& eid) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  p->stdin_close_requested = true;
  if (p->stdin_buf.empty()) p->stdin_fd.reset();
  return OkStatus();
}

Status ProcessTable::ResizeTerminal(const std::string& cid, const std::string& eid, uint32_t rows,
                                    uint32_t cols) {
  Proc* p = Find(cid, eid);
  if (p == nullptr) return UnknownProcess(cid, eid);
  if (!p->tty) return FailedPrecondition("process " + cid + "/" + eid + " has no terminal");
  if (rows > 0xffff || cols > 0xffff) return InvalidArgument("window size out of range");
  struct winsize ws;
  std::memset(&ws, 0, sizeof(ws));
  ws.ws_row = static_cast<unsigned short>(rows);
  ws.ws_col = static_cast<unsigned short>(cols);
  if (::ioctl(p->tty.get(), TIOCSWINSZ, &ws) != 0) return ErrnoStatus(errno, "TIOCSWINSZ");
  return OkStatus();
}

bool ProcessTable::Running(const std::string& cid, const std::string& eid) const {
  auto it = procs_.find(Key(cid, eid));
  return it != procs_.end() && !it->second->exited;
}

size_t ProcessTable::SignalContainer(const std::string& cid, int signal) {
  size_t n = 0;
  for (auto& [key, p] : procs_) {
    if (key.first != cid || p->exited) continue;
    if (::kill(-p->pid, signal) != 0) ::kill(p->pid, signal);
    ++n;
  }
  return n;
}

Status ProcessTable::RemoveContainer(const std::string& cid, std::chrono::milliseconds timeout) {
  std::vector<Proc*> mine;
  for (auto& [key, p] : procs_) {
    if (key.first != cid) continue;
    mine.push_back(p.get());
    if (p->exited) continue;
    ::kill(-p->pid, SIGKILL);
    ::kill(p->pid, SIGKILL);
  }
  auto deadline = Clock::now() + timeout;
  while (true) {
    bool all = true;
    for (Proc* p : mine) {
      if (p->exited) continue;
      int st = 0;
      pid_t r = ::waitpid(p->pid, &st, WNOHANG);
      if (r == p->pid || (r < 0 && errno == ECHILD)) {
        OnExit(p, r == p->pid ? st : (128 + SIGKILL) << 8);
      } else {
        all = false;
      }
    }
    if (all) break;
    if (Clock::now() >= deadline) {
      size_t left = 0;
      for (Proc* p : mine) left += p->exited ? 0 : 1;
      return DeadlineExceeded(std::to_string(left) + " process(es) of container " + cid +
                              " did not die within " + std::to_string(timeout.count()) + " ms");
    }
    ::usleep(2000);
  }
  for (Proc* p : mine) {
    for (OutStream* s : {&p->out, &p->err}) {
      FillOutput(s);
      ServeReaders(s);
      for (auto& [id, len] : s->waiters) answers_.read(id, std::string());  // the rest: EOF
      s->waiters.clear();
    }
  }
  for (auto it = procs_.begin(); it != procs_.end();) {
    if (it->first.first == cid) {
      it = procs_.erase(it);
    } else {
      ++it;
    }
  }
  poll_refs_.clear();
  return OkStatus();
}

void ProcessTable::DropDeferred() {
  for (auto& [key, p] : procs_) {
    p->out.waiters.clear();
    p->err.waiters.clear();
    p->wait_waiters.clear();
  }
}

size_t ProcessTable::deferred_count() const {
  size_t n = 0;
  for (auto& [key, p] : procs_) n += p->out.waiters.size() + p->err.waiters.size() + p->wait_waiters.size();
  return n;
}

// ---------------------------------------------------------------- pipes

void ProcessTable::FlushStdin(Proc* p) {
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

void ProcessTable::FillOutput(OutStream* s) {
  while (s->fd && s->buf.size() < limits_.max_output_buffer) {
    size_t want = std::min<size_t>(limits_.max_output_buffer - s->buf.size(), 256 * 1024);
    size_t old = s->buf.size();
    s->buf.resize(old + want);
    ssize_t n = ::read(s->fd.get(), s->buf.data() + old, want);
    s->buf.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0 && errno != EIO) Log("reading a process pipe: %s", std::strerror(errno));  // EIO: a pty's end
    s->eof = true;
    s->fd.reset();
  }
}

std::string ProcessTable::TakeOutput(OutStream* s, uint32_t len) {
  size_t n = len == 0 ? limits_.max_output_buffer : std::min<size_t>(len, limits_.max_output_buffer);
  n = std::min(n, s->buf.size());
  std::string data = s->buf.substr(0, n);
  s->buf.erase(0, n);
  return data;
}

void ProcessTable::ServeReaders(OutStream* s) {
  while (!s->waiters.empty()) {
    auto [id, len] = s->waiters.front();
    if (!s->buf.empty()) {
      s->waiters.pop_front();
      answers_.read(id, TakeOutput(s, len));
      FillOutput(s);  // room again: take what the pipe holds now
    } else if (s->eof) {
      s->waiters.pop_front();
      s->eof_delivered = true;
      answers_.read(id, std::string());
    } else {
      return;
    }
  }
}

void ProcessTable::AddPollFds(std::vector<pollfd>* fds) {
  poll_refs_.clear();
  for (auto& [key, p] : procs_) {
    Proc* proc = p.get();
    if (proc->stdin_fd && !proc->stdin_buf.empty()) {
      fds->push_back({proc->stdin_fd.get(), POLLOUT, 0});
      poll_refs_.push_back({proc, PollKind::kStdin, proc->stdin_fd.get()});
    }
    if (proc->out.fd && proc->out.buf.size() < limits_.max_output_buffer) {
      fds->push_back({proc->out.fd.get(), POLLIN, 0});
      poll_refs_.push_back({proc, PollKind::kStdout, proc->out.fd.get()});
    }
    if (proc->err.fd && proc->err.buf.size() < limits_.max_output_buffer) {
      fds->push_back({proc->err.fd.get(), POLLIN, 0});
      poll_refs_.push_back({proc, PollKind::kStderr, proc->err.fd.get()});
    }
  }
}

void ProcessTable::HandlePollFds(const pollfd* fds, size_t count) {
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

// ---------------------------------------------------------------- exits

void ProcessTable::OnExit(Proc* p, int wstatus) {
  p->exited = true;
  p->exit_time = Clock::now();
  if (WIFEXITED(wstatus)) {
    p->exit_status = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    p->exit_status = 128 + WTERMSIG(wstatus);
  } else {
    p->exit_status = 255;
  }
  std::vector<uint32_t> waiters;
  waiters.swap(p->wait_waiters);
  for (uint32_t id : waiters) {
    p->wait_answered = true;
    answers_.wait(id, p->exit_status);
  }
}

void ProcessTable::ReapChildren() {
  if (limits_.reap_all_children) {
    while (true) {
      int st = 0;
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
    int st = 0;
    pid_t r = ::waitpid(p->pid, &st, WNOHANG);
    if (r == p->pid) OnExit(p.get(), st);
  }
}

void ProcessTable::CollectGarbage() {
  auto now = Clock::now();
  for (auto it = procs_.begin(); it != procs_.end();) {
    Proc* p = it->second.get();
    bool done = p->exited && p->wait_answered && p->out.eof_delivered && p->err.eof_delivered;
    bool expired = p->exited && now - p->exit_time >= limits_.forget_grace;
    if (!done && !expired) {
      ++it;
      continue;
    }
    for (OutStream* s : {&p->out, &p->err})
      for (auto& [id, len] : s->waiters) answers_.failed(id, Status(Code::kAborted, "process forgotten"));
    it = procs_.erase(it);
    poll_refs_.clear();
  }
}

}  // namespace vmf::agent
