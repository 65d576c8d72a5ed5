// AgentProxy: the VM's view of the process that owns its agent channel and
// serves ttrpc clients on a socket of its own (src/proxy/ is that program).
// ProxyLauncher starts one for a VM, or adopts one that another process
// started; the real launcher spawns `vmfactory-proxy`, unit tests use an
// in-process agent instead (tests/mocks/in_process_agent.h).
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "hypervisor/config.h"
#include "hypervisor/hypervisor.h"

namespace vmf {

class AgentProxy {
 public:
  virtual ~AgentProxy() = default;
  // Where agent clients connect: "unix:///path".
  virtual std::string url() const = 0;
  // The proxy's pid (-1 when it is not a process of its own).
  virtual pid_t pid() const = 0;
  // How it ended ("exit code 1", "killed by signal 9") once it has; nullopt
  // while it runs.
  virtual std::optional<std::string> Exited() = 0;
  // Stops it; idempotent.
  virtual void Stop() = 0;
  // Gives it up without stopping it (handed to another process).
  virtual pid_t Release() = 0;
};

struct ProxyRequest {
  std::string vm_id;
  std::string binary;         // the proxy program (VMConfig::proxy.path)
  std::string dir;            // the VM's runtime dir: its socket and log go here
  GuestEndpoints guest;       // what it connects to
  VmConfinement confinement;  // as the VM's QEMU: its uid, a jail
  // The VM's cgroup.procs fds: a launched proxy joins them before it execs.
  std::vector<int> cgroup_procs_fds;
};

class ProxyLauncher {
 public:
  virtual ~ProxyLauncher() = default;
  // Starts a proxy and returns once it listens; the guest may still boot.
  virtual Result<std::unique_ptr<AgentProxy>> Launch(const ProxyRequest& request,
                                                     const Deadline& deadline) = 0;
  // Takes over a running proxy of the VM in request.dir.
  virtual Result<std::unique_ptr<AgentProxy>> Adopt(const ProxyRequest& request, pid_t pid) = 0;
};

// Spawns the vmfactory-proxy program (stateless, shared).
ProxyLauncher& ProcessProxyLauncher();

// The paths a VM's proxy uses inside the VM dir.
std::string ProxySocketPath(const std::string& vm_dir);
std::string ConsoleLogPath(const std::string& vm_dir);

}  // namespace vmf
