// HostCensus: what vmfactory has running and lying around on this host under
// one runtime dir. Fault-injection tests and the soak run take one before and
// one after, and any difference is a leak.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace vmf {

struct HostCensus {
  int qemu = 0;     // QEMU processes whose arguments name the runtime dir
  int proxies = 0;  // vmfactory-proxy processes whose arguments name it
  int sockets = 0;  // unix sockets below it
  int vm_dirs = 0;  // VM runtime dirs below it (RUNTIME/vm/ID, RUNTIME/daemon/pool/vm/ID)
  int mounts = 0;   // mount points below it
  int fds = -1;     // open fds of the process asked about (-1: not asked)

  bool operator==(const HostCensus&) const = default;
  // "qemu=1 proxies=1 sockets=3 vm_dirs=1 mounts=0 fds=12"
  std::string ToString() const;
};

// Counts under runtime_dir; fds of fds_of if > 0.
HostCensus TakeCensus(const std::string& runtime_dir, pid_t fds_of = 0);

// Live processes of ours (same uid) whose command line contains needle.
// Zombies have an empty command line and are not counted.
std::vector<pid_t> ProcessesMentioning(const std::string& needle);

// The first live process (any owner: a confined VM runs as a uid of its
// own) whose command line contains every needle; -1 if there is none.
pid_t FindProcessMentioningAll(const std::vector<std::string>& needles);

// Whether pid is a live process of ours whose command line contains needle.
bool ProcessMentions(pid_t pid, const std::string& needle);

// SIGTERM, then SIGKILL after grace, to every process of ours whose command
// line contains needle (a VM's runtime dir names its QEMU and proxy, so this
// stops them by what they are, not by a pid that may have been reused).
void StopProcessesMentioning(const std::string& needle, std::chrono::milliseconds grace);

// Open fds of pid (-1 if it cannot be read).
int CountFds(pid_t pid);

}  // namespace vmf
