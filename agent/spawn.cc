#include "spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace vmf::agent {
namespace {

// Stages reported by a child that failed between fork and exec.
enum ChildStage : int { kStageSetsid = 1, kStageDup, kStageSetgid, kStageSetuid, kStageChdir, kStageExec };

const char* StageName(int stage) {
  switch (stage) {
    case kStageSetsid:
      return "setsid";
    case kStageDup:
      return "dup2";
    case kStageSetgid:
      return "setgid";
    case kStageSetuid:
      return "setuid";
    case kStageChdir:
      return "chdir";
    default:
      return "exec";
  }
}

// A pipe whose ends are CLOEXEC and not 0, 1 or 2 (so dup2 onto the standard
// fds in the child never clobbers another pipe end).
Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  for (int i = 0; i < 2; ++i) {
    if (p[i] >= 3) continue;
    int moved = ::fcntl(p[i], F_DUPFD_CLOEXEC, 3);
    int err = errno;
    ::close(p[i]);
    p[i] = moved;
    if (moved < 0) {
      if (p[1 - i] >= 0) ::close(p[1 - i]);
      return ErrnoStatus(err, "fcntl(F_DUPFD_CLOEXEC)");
    }
  }
  read_end->reset(p[0]);
  write_end->reset(p[1]);
  return OkStatus();
}

void SetNonBlocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

[[noreturn]] void ChildFail(int fd, int stage, int err) {
  int msg[2] = {stage, err};
  ssize_t unused = ::write(fd, msg, sizeof(msg));
  (void)unused;
  ::_exit(127);
}

// Runs in the forked child: only async-signal-safe calls from here on.
[[noreturn]] void ChildExec(int in_fd, int out_fd, int err_fd, int report_fd, uid_t uid, gid_t gid,
                            const char* cwd, char* const* argv, char* const* envp,
                            const std::vector<const char*>& candidates) {
  if (::setsid() < 0) ChildFail(report_fd, kStageSetsid, errno);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &sa, nullptr);  // EINVAL for KILL/STOP: fine
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // The pipe ends are all >= 3 (MakePipe), so these dup2 cannot collide.
  if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0)
    ChildFail(report_fd, kStageDup, errno);

  if (gid != 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0) ChildFail(report_fd, kStageSetgid, errno);
  }
  if (uid != 0) {
    if (::setuid(uid) != 0) ChildFail(report_fd, kStageSetuid, errno);
  }
  if (::chdir(cwd) != 0) ChildFail(report_fd, kStageChdir, errno);

  // Close every inherited fd except 0-2 and the report pipe (CLOEXEC).
  bool closed = true;
  if (report_fd > 3 && ::syscall(SYS_close_range, 3u, static_cast<unsigned>(report_fd - 1), 0u) != 0)
    closed = false;
  if (closed && ::syscall(SYS_close_range, static_cast<unsigned>(report_fd + 1), ~0u, 0u) != 0)
    closed = false;
  if (!closed) {
    for (int fd = 3; fd < 65536; ++fd)
      if (fd != report_fd) ::close(fd);
  }

  int saved = ENOENT;
  for (const char* path : candidates) {
    ::execve(path, argv, envp);
    int e = errno;
    if (e == ENOENT || e == ENOTDIR) continue;
    saved = e;
    if (e != EACCES) break;  // like execvp: remember EACCES but keep searching
  }
  ChildFail(report_fd, kStageExec, saved);
}

}  // namespace

Result<Spawned> Spawn(const grpc::Process& proc) {
  if (proc.args_size() == 0) return InvalidArgument("empty Args");
  std::vector<std::string> args(proc.args().begin(), proc.args().end());
  std::vector<std::string> env(proc.env().begin(), proc.env().end());
  if (env.empty()) {
    env.push_back(std::string("PATH=") + kDefaultPath);
    env.emplace_back("HOME=/root");
  }
  std::string path_var = kDefaultPath;
  for (const std::string& e : env)
    if (e.rfind("PATH=", 0) == 0) path_var = e.substr(5);
  for (const std::string& a : args)
    if (a.find('\0') != std::string::npos) return InvalidArgument("argument contains a NUL byte");
  for (const std::string& e : env)
    if (e.find('\0') != std::string::npos) return InvalidArgument("environment contains a NUL byte");
  std::string cwd = proc.cwd().empty() ? "/" : proc.cwd();
  if (cwd.find('\0') != std::string::npos) return InvalidArgument("cwd contains a NUL byte");

  // Everything the child needs is built before fork().
  std::vector<std::string> cand_store;
  if (args[0].find('/') != std::string::npos) {
    cand_store.push_back(args[0]);
  } else {
    size_t start = 0;
    while (true) {
      size_t colon = path_var.find(':', start);
      std::string dir =
          path_var.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (dir.empty()) dir = ".";
      cand_store.push_back(dir + "/" + args[0]);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  std::vector<const char*> candidates;
  candidates.reserve(cand_store.size());
  for (const std::string& c : cand_store) candidates.push_back(c.c_str());
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w, rep_r, rep_w;
  VMF_RETURN_IF_ERROR(MakePipe(&in_r, &in_w));
  VMF_RETURN_IF_ERROR(MakePipe(&out_r, &out_w));
  VMF_RETURN_IF_ERROR(MakePipe(&err_r, &err_w));
  VMF_RETURN_IF_ERROR(MakePipe(&rep_r, &rep_w));

  uid_t uid = proc.has_user() ? proc.user().uid() : 0;
  gid_t gid = proc.has_user() ? proc.user().gid() : 0;
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    ChildExec(in_r.get(), out_w.get(), err_w.get(), rep_w.get(), uid, gid, cwd.c_str(), argv.data(),
              envp.data(), candidates);
  }
  in_r.reset();
  out_w.reset();
  err_w.reset();
  rep_w.reset();

  int msg[2] = {0, 0};
  size_t got = 0;
  while (got < sizeof(msg)) {
    ssize_t n = ::read(rep_r.get(), reinterpret_cast<char*>(msg) + got, sizeof(msg) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > 0) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (got < sizeof(msg)) return Internal("exec " + args[0] + ": child failed before exec");
    std::string what = std::string(StageName(msg[0])) + " " + (msg[0] == kStageChdir ? cwd : args[0]);
    return ErrnoStatus(msg[1], what);
  }
  SetNonBlocking(in_w.get());
  SetNonBlocking(out_r.get());
  SetNonBlocking(err_r.get());
  Spawned s;
  s.pid = pid;
  s.in = std::move(in_w);
  s.out = std::move(out_r);
  s.err = std::move(err_r);
  return s;
}

}  // namespace vmf::agent
