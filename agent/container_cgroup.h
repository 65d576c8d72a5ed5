// ContainerCgroup: a container's processes in a cgroup of their own, with
// the limits of its OCI Linux.Resources (memory, CPU quota/period/shares,
// pids), usage for StatsContainer and the freezer for Pause/Resume.
//
// Where: <our cgroup>/<parent>/<container id>, <our cgroup> being the one
// this process is in (/proc/self/cgroup; "/" for the guest's PID 1). With
// cgroup v2 (<root>/cgroup.controllers exists; the guest mounts cgroup2 on
// /sys/fs/cgroup at boot) that is one dir, and the memory, cpu and pids
// controllers are enabled down to it as far as the hierarchy lets us. With
// v1, one dir per mounted controller among memory, cpu, cpuacct, pids and
// freezer (<root>/<controller>).
//
//   VMF_ASSIGN_OR_RETURN(ContainerCgroup cg, ContainerCgroup::Create(config, "c1"));
//   VMF_RETURN_IF_ERROR(cg.Apply(spec.linux().resources()));
//   spawn_options.before_start = [&](pid_t pid) { return cg.AddProcess(pid); };
//   cg.Freeze(true); cg.Stats(); cg.Remove();   // Remove once its processes are gone
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "agent.pb.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf::agent {

struct CgroupConfig {
  std::string root = "/sys/fs/cgroup";  // "": containers get no cgroup
  std::string self_cgroup = "/proc/self/cgroup";
  std::string parent = "vmfactory";  // a name, no '/'
};

class ContainerCgroup {
 public:
  ContainerCgroup() = default;
  ContainerCgroup(ContainerCgroup&& o) noexcept { *this = std::move(o); }
  ContainerCgroup& operator=(ContainerCgroup&& o) noexcept;
  ContainerCgroup(const ContainerCgroup&) = delete;
  ContainerCgroup& operator=(const ContainerCgroup&) = delete;
  // Does not remove the dirs: Remove() does, once the processes are gone.
  ~ContainerCgroup() = default;

  // Makes the group of container `id`. UNAVAILABLE when there is no cgroup
  // hierarchy under config.root (none mounted, or config.root empty).
  static Result<ContainerCgroup> Create(const CgroupConfig& config, const std::string& id);

  bool valid() const { return !dirs_.empty(); }
  bool v2() const { return v2_; }
  // The group's dirs (v2: one; v1: one per controller, in the order memory,
  // cpu, cpuacct, pids, freezer, those mounted).
  std::vector<std::string> dirs() const;
  std::string Describe() const;

  // Writes the limits set in r (0 = not set; -1 = no limit). FAILED_PRECONDITION
  // naming the controller when a limit is asked for and its controller is not there.
  Status Apply(const grpc::LinuxResources& r);
  // Puts pid (and its future children) in the group.
  Status AddProcess(pid_t pid);
  // Freezes or thaws every process of the group and waits (up to 2 s) until
  // the kernel says it is done. UNAVAILABLE without a freezer.
  Status Freeze(bool frozen);
  // Usage: memory (usage, max usage, failcnt, limit, cache), CPU time (ns:
  // total, per CPU on v1, user and system), tasks (current, limit). A limit of
  // 0 means none; what the kernel does not say is 0.
  Result<grpc::CgroupStats> Stats() const;
  // How many of the group's processes the kernel's OOM killer killed (v2:
  // memory.events oom_kill; v1: memory.oom_control oom_kill). 0 without a
  // memory controller.
  uint64_t OomKills() const;
  // An fd that poll() reports ready when that count may have changed: v2,
  // memory.events itself (POLLPRI); v1, an eventfd registered through
  // cgroup.event_control (POLLIN). UNAVAILABLE without a memory controller.
  // After each report, DrainOomNotifier(fd) re-arms it.
  Result<UniqueFd> OpenOomNotifier() const;
  void DrainOomNotifier(int fd) const;
  // Removes the group's dirs (retrying while the kernel still counts exiting
  // tasks), and the parent dir if it is now empty. Errors are logged.
  void Remove();

 private:
  // The dir of a v1 controller, or of the v2 group; "" if not there.
  std::string Dir(const char* controller) const;

  bool v2_ = false;
  std::vector<std::pair<std::string, std::string>> dirs_;  // (controller or "", dir)
  std::vector<std::string> parents_;                       // the parent dirs, to remove when empty
};

}  // namespace vmf::agent
