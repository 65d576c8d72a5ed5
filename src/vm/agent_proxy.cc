#include "vm/agent_proxy.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"

namespace vmf {
namespace {

class ProxyProcess : public AgentProxy {
 public:
  ProxyProcess(ChildProcess process, std::string dir) : process_(std::move(process)), dir_(std::move(dir)) {}
  ~ProxyProcess() override { Stop(); }

  std::string url() const override { return "unix://" + ProxySocketPath(dir_); }
  pid_t pid() const override { return process_.pid(); }
  std::optional<std::string> Exited() override { return process_.Exited(); }
  void Stop() override { process_.Stop(std::chrono::milliseconds(1000)); }
  pid_t Release() override { return process_.Release(); }

 private:
  ChildProcess process_;
  std::string dir_;
};

class Launcher : public ProxyLauncher {
 public:
  // The proxy runs as its VM's QEMU does: the VM's uid, a jail with only
  // its program and the VM's dir, namespaces of its own (the sockets it
  // uses are files in the VM's dir).
  static Result<Confinement> Confine(const ProxyRequest& req, int log_fd) {
    const VmConfinement& v = req.confinement;
    VMF_ASSIGN_OR_RETURN(Confinement c, VmProcessConfinement(v, req.dir));
    if (v.change_ids && ::fchown(log_fd, v.uid, v.gid) != 0) {
      return ErrnoStatus(errno, "give the console log to the VM's uid");
    }
    if (!v.jail) return c;
    JailBuilder jail(c.root_dir);
    jail.ReadOnly(req.binary).Writable(req.dir);
    VMF_ASSIGN_OR_RETURN(c.steps, jail.Build());
    return c;
  }

  Result<std::unique_ptr<AgentProxy>> Launch(const ProxyRequest& req, const Deadline& deadline) override {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
    UniqueFd ready_r(p[0]);
    UniqueFd ready_w(p[1]);
    const std::string log_path = ConsoleLogPath(req.dir);
    UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return ErrnoStatus(errno, "create " + log_path);
    auto left = std::chrono::duration_cast<Duration>(deadline.when() - Clock::now());
    std::vector<std::string> argv = {req.binary,
                                     "--vm-id",
                                     req.vm_id,
                                     "--agent-socket",
                                     req.guest.agent,
                                     "--console-socket",
                                     req.guest.console,
                                     "--listen",
                                     ProxySocketPath(req.dir),
                                     "--log-file",
                                     log_path,
                                     "--ready-fd",
                                     "3",
                                     "--connect-timeout-ms",
                                     std::to_string(std::max<long long>(left.count(), 1000))};
    VMF_ASSIGN_OR_RETURN(const Confinement confine, Confine(req, log.get()));
    SpawnOptions opts;
    opts.stderr_fd = log.get();
    opts.pass_fds = {ready_w.get()};
    opts.confine = &confine;
    opts.cgroup_procs_fds = req.cgroup_procs_fds;
    VMF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, opts));
    auto proxy = std::make_unique<ProxyProcess>(std::move(child), req.dir);
    ready_w.reset();
    std::string line;
    Status st =
        ReadExact(ready_r.get(), 6, &line, Deadline(std::min<Duration>(left, std::chrono::seconds(10))));
    if (!st.ok() || line != "ready\n") {
      return Unavailable("proxy did not start: " + (st.ok() ? "bad ready line" : st.message()) +
                         "; log: " + TailOfFile(log_path, 1024));
    }
    return std::unique_ptr<AgentProxy>(std::move(proxy));
  }

  Result<std::unique_ptr<AgentProxy>> Adopt(const ProxyRequest& req, pid_t pid) override {
    return std::unique_ptr<AgentProxy>(std::make_unique<ProxyProcess>(ChildProcess::Adopt(pid), req.dir));
  }
};

}  // namespace

ProxyLauncher& ProcessProxyLauncher() {
  static Launcher launcher;
  return launcher;
}

std::string ProxySocketPath(const std::string& vm_dir) { return vm_dir + "/proxy.sock"; }
std::string ConsoleLogPath(const std::string& vm_dir) { return vm_dir + "/console.log"; }

}  // namespace vmf
