// ChildProcess: a started program (argv vector, never a shell), killed and
// reaped when its owner is destroyed unless Release()d.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/jail.h"
#include "common/status.h"

namespace vmf {

struct SpawnOptions {
  // fds to install as the child's 0, 1, 2; -1 means /dev/null.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // Further fds passed to the child as 3, 4, ... in this order.
  std::vector<int> pass_fds;
  // Start the child in a session of its own, so that a terminal's Ctrl-C
  // reaches only us and we stop the child in order.
  bool new_session = true;
  // The child's umask (-1: inherit ours). Private by default: what our
  // children create (QEMU's sockets, logs) is for us alone.
  int umask = 077;
  // Confines the child (identity, namespaces, jail, no_new_privs), if set;
  // it must outlive the Spawn call.
  const Confinement* confine = nullptr;
  // cgroup.procs files (open for writing, CLOEXEC) that the child writes
  // itself into before it execs, so that everything it runs is in those
  // cgroups from its first instruction (common/cgroup.h).
  std::vector<int> cgroup_procs_fds;
  // No transparent huge pages for the child and what it runs
  // (PR_SET_THP_DISABLE; a kernel without it ignores the request).
  bool no_huge_pages = false;
};

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Starts argv[0] (an absolute path or a name looked up in PATH).
  static Result<ChildProcess> Spawn(const std::vector<std::string>& argv, const SpawnOptions& opts = {});
  // Adopts a process we did not start (for example a VM handed over by a
  // daemon): it is signalled, and reaped only if it happens to be our child.
  static ChildProcess Adopt(pid_t pid);

  pid_t pid() const { return pid_; }
  bool valid() const { return pid_ > 0; }
  // The wait status if the process has exited (reaps it), nullopt if running.
  std::optional<int> Poll();
  bool Running() { return valid() && !Poll().has_value(); }
  // How it ended ("exit code 1", "killed by signal 9") once it has (reaping
  // it); nullopt while it runs or when there is no process.
  std::optional<std::string> Exited();
  // Waits for exit until the deadline; DEADLINE_EXCEEDED if still running.
  Result<int> Wait(const Deadline& deadline);
  // SIGTERM, then SIGKILL after grace; always reaps. Idempotent.
  void Stop(Duration grace = std::chrono::milliseconds(2000));
  // Sends a signal; harmless if the process is gone.
  void Signal(int sig);
  // Gives up ownership: the process keeps running after we are destroyed.
  pid_t Release();

 private:
  explicit ChildProcess(pid_t pid, bool ours) : pid_(pid), ours_(ours) {}
  pid_t pid_ = -1;
  bool ours_ = true;  // our child: we can waitpid() it
  std::optional<int> exit_status_;
};

// This program's own path (/proc/self/exe), for running it again as a child;
// "vmfactory" if the link cannot be read.
std::string SelfExe();

// Whether pid names a live (not zombie) process.
bool ProcessAlive(pid_t pid);

// Resolves a program name through PATH (a name with a '/' is checked as
// it is); empty if not found or not executable.
std::string FindProgram(const std::string& name);

// Runs argv to completion (no shell) and returns its stdout (at most
// max_output bytes kept). A non-zero exit is an error that names the program
// and carries the tail of what it said on stderr; at the deadline the
// program is killed.
Result<std::string> RunProgram(const std::vector<std::string>& argv, const Deadline& deadline,
                               size_t max_output = 1 << 20);
// Human-readable form of a wait status: "exit code 3", "killed by signal 9".
std::string DescribeWaitStatus(int status);

}  // namespace vmf
