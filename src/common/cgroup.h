// VmCgroup: one VM's processes (QEMU and its proxy) in a cgroup of their
// own, with limits on memory (no swap), CPU time and tasks, usage to read,
// and the reason when a limit stopped them.
//
// Where: PARENT/vmfactory/NAME, PARENT being the cgroup this process is in
// (/proc/self/cgroup). With cgroup v2 (a unified hierarchy whose memory, cpu
// and pids controllers our cgroup can hand down) that is one dir; with v1,
// one per controller (memory, and cpu and pids when mounted), each under our
// cgroup of that controller. The dirs are removed when the owner goes.
//
//   VMF_ASSIGN_OR_RETURN(auto cg, VmCgroup::Create(id, {.memory_bytes = 512 << 20, .cpus = 2, .pids = 256}));
//   SpawnOptions opts; opts.cgroup_procs_fds = cg.procs_fds();   // the child joins before it execs
//   ... if (auto why = cg.LimitHit()) error += "; " + *why;
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace vmf {

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // memory and swap together (no swap); 0: no limit
  double cpus = 0;            // CPU time, in cores; 0: no limit
  uint32_t pids = 0;          // tasks (processes and threads); 0: no limit
};

struct CgroupUsage {
  uint64_t memory_bytes = 0;
  uint64_t memory_peak_bytes = 0;   // 0: the kernel does not say
  uint64_t memory_limit_bytes = 0;  // 0: no limit
  uint64_t pids = 0;
  uint64_t oom_kills = 0;  // processes the memory limit killed
};

// Where the kernel's cgroup files are; tests may point elsewhere.
struct CgroupSystem {
  std::string mountinfo = "/proc/self/mountinfo";
  std::string self_cgroup = "/proc/self/cgroup";
};

class VmCgroup {
 public:
  VmCgroup() = default;
  VmCgroup(VmCgroup&& o) noexcept = default;
  VmCgroup& operator=(VmCgroup&& o) noexcept;
  VmCgroup(const VmCgroup&) = delete;
  VmCgroup& operator=(const VmCgroup&) = delete;
  ~VmCgroup() { Remove(); }

  // Creates the group `name` (a VM id: no '/') and writes the limits.
  // UNAVAILABLE when this host has no cgroup hierarchy we can use (not
  // root, read-only, v2 without the controllers delegated to us), naming why.
  static Result<VmCgroup> Create(const std::string& name, const CgroupLimits& limits,
                                 const CgroupSystem& sys = {});
  // Takes over the group of a VM that another process created (dirs() of
  // its VmCgroup). Each dir must be a .../vmfactory/NAME dir of a cgroup
  // file system.
  static Result<VmCgroup> Adopt(const std::string& name, const std::vector<std::string>& dirs);

  // The dirs of an existing group `name` where Create would make it (what
  // a killed process left, for instance); empty if there are none.
  static std::vector<std::string> DirsFor(const std::string& name, const CgroupSystem& sys = {});

  bool valid() const { return !dirs_.empty(); }
  const std::string& name() const { return name_; }
  // The group's dirs, one per hierarchy.
  std::vector<std::string> dirs() const;
  // "cgroup v1 /sys/fs/cgroup/memory/.../vmfactory/ID (+2)" for logs.
  std::string Describe() const;
  // Open (CLOEXEC) cgroup.procs files, one per hierarchy, for
  // SpawnOptions::cgroup_procs_fds; valid while this owner lives.
  std::vector<int> procs_fds() const;
  // Moves a running process into the group.
  Status Join(pid_t pid);
  // Changes the limits (a VM that grew by hotplug).
  Status SetLimits(const CgroupLimits& limits);
  const CgroupLimits& limits() const { return limits_; }
  // What the kernel counts now (zeros for what cannot be read).
  CgroupUsage Usage() const;
  // The same for a group that another process owns, from its dirs() (a
  // daemon's record of a VM it handed out); nothing is taken over.
  static CgroupUsage UsageOf(const std::vector<std::string>& dirs);
  // Why the group's processes were stopped or refused, if a limit did it:
  // "killed by its cgroup's memory limit (512 MiB)".
  std::optional<std::string> LimitHit() const;
  // Removes the dirs, retrying for a moment while processes still exit
  // (a process is in its group until it is reaped). Idempotent.
  void Remove();
  // Keeps the group (handed to another process) and returns its dirs.
  std::vector<std::string> Release();

 private:
  enum class Kind { kV2, kMemory, kCpu, kPids };
  struct Dir {
    Kind kind;
    std::string path;
    UniqueFd procs;  // cgroup.procs, open for writing
  };
  // Our cgroup in each hierarchy we use: (kind, dir).
  static Result<std::vector<std::pair<Kind, std::string>>> Hierarchies(const CgroupSystem& sys);
  const Dir* Find(Kind kind) const;
  const Dir* MemoryDir() const;
  const Dir* PidsDir() const;
  const Dir* CpuDir() const;

  std::string name_;
  std::vector<Dir> dirs_;
  CgroupLimits limits_;
};

// The cgroup of one controller of this process ("memory"; "" for v2), as
// /proc/self/cgroup lists it; empty if not listed.
std::string OwnCgroupPath(const std::string& controller, const CgroupSystem& sys = {});

}  // namespace vmf
