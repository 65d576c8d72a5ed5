#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <thread>

#include "common/fd.h"
#include "common/procfs.h"

namespace vmf {
namespace {
constexpr int kMaxPassFds = 16;
// The child's failure report names this step when exec itself failed.
constexpr int kExecStep = -1000;
constexpr int kCgroupStep = -1001;  // joining a cgroup failed
}  // namespace

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)), ours_(o.ours_), exit_status_(o.exit_status_) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    Stop();
    pid_ = std::exchange(o.pid_, -1);
    ours_ = o.ours_;
    exit_status_ = o.exit_status_;
  }
  return *this;
}

ChildProcess::~ChildProcess() { Stop(); }

Result<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv, const SpawnOptions& opts) {
  if (argv.empty() || argv[0].empty()) return InvalidArgument("empty command line");
  if (opts.pass_fds.size() > kMaxPassFds) return InvalidArgument("too many fds to pass");
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const Confinement* confine = opts.confine;
  // The environment, with the confinement's entries replacing ours of the same name.
  std::vector<char*> cenv;
  if (confine && !confine->env.empty()) {
    for (char** e = environ; *e; ++e) {
      std::string_view entry(*e);
      bool replaced = std::any_of(confine->env.begin(), confine->env.end(), [&](const std::string& x) {
        size_t eq = x.find('=');
        return eq != std::string::npos && entry.substr(0, eq + 1) == std::string_view(x).substr(0, eq + 1);
      });
      if (!replaced) cenv.push_back(*e);
    }
    for (const auto& x : confine->env) cenv.push_back(const_cast<char*>(x.c_str()));
    cenv.push_back(nullptr);
  }
  char** envp = cenv.empty() ? environ : cenv.data();

  // The child reports a failed exec through this pipe (closed on success).
  int errpipe[2];
  if (::pipe2(errpipe, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd err_r(errpipe[0]);
  UniqueFd err_w(errpipe[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return ErrnoStatus(errno, "open /dev/null");

  // New namespaces are made at fork time (a PID namespace only exists for
  // children): a raw clone() that otherwise behaves as fork().
  pid_t pid = (confine && confine->namespaces != 0)
                  ? static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD | confine->namespaces, nullptr, nullptr,
                                                 nullptr, nullptr))
                  : ::fork();
  if (pid < 0) return ErrnoStatus(errno, confine && confine->namespaces ? "clone (new namespaces)" : "fork");
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    // Into its cgroups first ("0": the writer), before any fd is moved.
    for (int fd : opts.cgroup_procs_fds) {
      if (::write(fd, "0", 1) != 1) {
        int failed[2] = {kCgroupStep, errno};
        ssize_t ignored = ::write(err_w.get(), failed, sizeof(failed));
        (void)ignored;
        _exit(127);
      }
    }
    if (opts.new_session) ::setsid();
    if (opts.umask >= 0) ::umask(static_cast<mode_t>(opts.umask));
    if (opts.no_huge_pages) (void)::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s = 1; s < NSIG; ++s) ::signal(s, SIG_DFL);
    // Copy every source fd above the target range first, so that installing
    // them as 0..N never clobbers a source that is still to be installed.
    const int std_src[3] = {opts.stdin_fd, opts.stdout_fd, opts.stderr_fd};
    const int n_pass = static_cast<int>(opts.pass_fds.size());
    int srcs[3 + kMaxPassFds];
    int n = 3 + n_pass;
    for (int i = 0; i < n; ++i) {
      int src = i < 3 ? std_src[i] : opts.pass_fds[static_cast<size_t>(i - 3)];
      if (src < 0) src = devnull.get();
      srcs[i] = ::fcntl(src, F_DUPFD_CLOEXEC, 3 + kMaxPassFds);
      if (srcs[i] < 0) _exit(127);
    }
    for (int i = 0; i < n; ++i) {
      if (::dup2(srcs[i], i) < 0) _exit(127);
    }
    ::close_range(3 + n_pass, ~0U, CLOSE_RANGE_CLOEXEC);
    ::fcntl(err_w.get(), F_SETFD, FD_CLOEXEC);
    int report[2] = {kExecStep, 0};
    if (confine && !ApplyConfinementInChild(*confine, &report[0], &report[1])) {
      ssize_t ignored = ::write(err_w.get(), report, sizeof(report));
      (void)ignored;
      _exit(127);
    }
    ::execvpe(cargv[0], cargv.data(), envp);
    report[1] = errno;
    ssize_t ignored = ::write(err_w.get(), report, sizeof(report));
    (void)ignored;
    _exit(127);
  }
  err_w.reset();
  ChildProcess child(pid, true);
  int report[2] = {0, 0};  // the failed step, errno
  // The child's setup is system calls only; one that does not reach exec in
  // this time is stuck (for example on a lock it inherited), not slow.
  Deadline setup(std::chrono::seconds(30));
  for (;;) {
    struct pollfd p = {.fd = err_r.get(), .events = POLLIN, .revents = 0};
    int r = ::poll(&p, 1, setup.remaining_ms());
    if (r > 0) break;
    if (r < 0 && errno == EINTR) continue;
    child.Stop(std::chrono::milliseconds(0));
    return DeadlineExceeded("start " + argv[0] + ": the child did not reach exec within 30 s");
  }
  ssize_t n = 0;
  do {
    n = ::read(err_r.get(), report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(report))) {
    child.Stop(std::chrono::milliseconds(0));
    if (report[0] == kCgroupStep) return ErrnoStatus(report[1], "put " + argv[0] + " in its cgroup");
    if (report[0] == kExecStep || !confine) return ErrnoStatus(report[1], "start " + argv[0]);
    return ErrnoStatus(report[1], "start " + argv[0] + ": " + confine->DescribeStep(report[0]));
  }
  return child;
}

ChildProcess ChildProcess::Adopt(pid_t pid) { return ChildProcess(pid, false); }

std::optional<int> ChildProcess::Poll() {
  if (exit_status_) return exit_status_;
  if (pid_ <= 0) return std::nullopt;
  if (!ours_) {
    // Not our child (or not waited for by us): gone when /proc has no
    // entry, or only a zombie left for its parent to reap.
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_status_ = status;
    } else if (!ProcessAlive(pid_)) {
      exit_status_ = 0;
    }
    return exit_status_;
  }
  int status = 0;
  pid_t r = 0;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_ || (r < 0 && errno == ECHILD)) exit_status_ = (r == pid_) ? status : 0;
  return exit_status_;
}

Result<int> ChildProcess::Wait(const Deadline& deadline) {
  auto sleep = std::chrono::milliseconds(1);
  for (;;) {
    if (auto st = Poll()) return *st;
    if (deadline.expired()) return DeadlineExceeded("process " + std::to_string(pid_) + " still running");
    std::this_thread::sleep_for(sleep);
    sleep = std::min(sleep * 2, std::chrono::milliseconds(20));
  }
}

void ChildProcess::Signal(int sig) {
  if (pid_ > 0 && !exit_status_) ::kill(pid_, sig);
}

void ChildProcess::Stop(Duration grace) {
  if (pid_ <= 0) return;
  if (!Poll()) {
    if (grace.count() > 0) {
      Signal(SIGTERM);
      (void)Wait(Deadline(grace));
    }
    if (!Poll()) {
      Signal(SIGKILL);
      (void)Wait(Deadline(std::chrono::seconds(10)));
    }
  }
  pid_ = -1;
}

std::optional<std::string> ChildProcess::Exited() {
  if (!valid()) return std::nullopt;
  if (auto st = Poll()) return DescribeWaitStatus(*st);
  return std::nullopt;
}

pid_t ChildProcess::Release() { return std::exchange(pid_, -1); }

bool ProcessAlive(pid_t pid) {
  auto st = ReadProcStat(pid);
  return st && st->state != 'Z' && st->state != 'X';
}

std::string SelfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "vmfactory";
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

std::string FindProgram(const std::string& name) {
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty()) {
      std::string cand = dir + "/" + name;
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace vmf

namespace vmf {

Result<std::string> RunProgram(const std::vector<std::string>& argv, const Deadline& deadline,
                               size_t max_output) {
  if (argv.empty()) return InvalidArgument("RunProgram: empty argv");
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  UniqueFd err_r(err[0]), err_w(err[1]);
  SpawnOptions so;
  so.stdout_fd = out_w.get();
  so.stderr_fd = err_w.get();
  VMF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, so));
  out_w.reset();
  err_w.reset();
  std::string got[2];
  int fds[2] = {out_r.get(), err_r.get()};
  bool open[2] = {true, true};
  while ((open[0] || open[1]) && !deadline.expired()) {
    pollfd p[2] = {{open[0] ? fds[0] : -1, POLLIN, 0}, {open[1] ? fds[1] : -1, POLLIN, 0}};
    int r = ::poll(p, 2, 100);
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (!open[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[16384];
      ssize_t n = ::read(fds[i], buf, sizeof(buf));
      if (n <= 0) {
        open[i] = n < 0 && errno == EINTR;
        continue;
      }
      if (got[i].size() < max_output)
        got[i].append(buf, std::min(static_cast<size_t>(n), max_output - got[i].size()));
    }
  }
  const std::string name = argv[0].substr(argv[0].rfind('/') + 1);
  auto status = child.Wait(deadline);
  if (!status.ok()) {
    child.Stop(std::chrono::milliseconds(200));
    return DeadlineExceeded(name + " did not finish in time");
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    std::string msg = got[1].empty() ? got[0] : got[1];
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    if (msg.size() > 512) msg = "..." + msg.substr(msg.size() - 512);
    return Internal(name + " failed (" + DescribeWaitStatus(*status) + ")" + (msg.empty() ? "" : ": " + msg));
  }
  return got[0];
}

}  // namespace vmf
