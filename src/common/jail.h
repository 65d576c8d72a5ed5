// Confinement of a child process (a VM's QEMU or proxy): an identity of its
// own, new namespaces, a root that holds only what it needs, no new
// privileges and no capabilities. The parent builds a Confinement with
// JailBuilder; ChildProcess::Spawn carries it out in the child between fork
// and exec, with system calls only (nothing there allocates).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/status.h"

namespace vmf {

// One step of building the jail's root, carried out in order in the child.
struct JailStep {
  enum Kind {
    kDir,      // mkdir target
    kSymlink,  // symlink source -> target
    kBindRO,   // bind-mount source on target, read-only, nosuid, nodev
    kBindRW,   // bind-mount source on target, read-write, nosuid, nodev
    kBindDev,  // bind-mount a device node on target (read-write, nosuid)
    kFile,     // create an empty file at target (a mount point for a file)
    kProc,     // mount a proc for the child's PID namespace on target
  };
  Kind kind;
  std::string source;
  std::string target;  // full host path under the jail's mount point
  std::string what;    // the path as the jailed process sees it (for errors)
};

struct Confinement {
  // Run as this uid/gid with no supplementary groups (change_ids), else as we are.
  bool change_ids = false;
  uid_t uid = 0;
  gid_t gid = 0;
  // CLONE_NEW* flags for the child's namespaces (0: none).
  int namespaces = 0;
  // The jail: a tmpfs mounted on root_dir (an empty host dir) in the child's
  // mount namespace, filled by steps, made the child's root and remounted
  // read-only. Empty root_dir: the host's filesystem view is kept.
  std::string root_dir;
  std::vector<JailStep> steps;
  // Sets no_new_privs and empties the capability bounding set.
  bool no_new_privs = true;
  int cap_last = 40;  // highest capability number (/proc/sys/kernel/cap_last_cap)
  // Extra environment entries ("NAME=value") for the program.
  std::vector<std::string> env;

  // Describes step `index` of the child's setup (as reported by the child).
  std::string DescribeStep(int index) const;
};

// Indices below 0 name the fixed setup steps in the child (DescribeStep).
inline constexpr int kJailStepNamespaces = -1;
inline constexpr int kJailStepRootTmpfs = -2;
inline constexpr int kJailStepPivot = -3;
inline constexpr int kJailStepReadOnlyRoot = -4;
inline constexpr int kJailStepNoNewPrivs = -5;
inline constexpr int kJailStepIds = -6;
inline constexpr int kJailStepCapabilities = -7;

// Builds a jail whose root shows the system's programs and libraries
// (/usr, the /lib and /bin links, ld.so.cache), /dev/null, zero, random and
// urandom, a /proc of the child's own PID namespace, and whatever is added.
// Every path keeps its host path inside the jail, so command lines need no
// change. Nothing else of the host is visible: not /root, /etc, /home, nor
// the runtime dirs of other VMs.
class JailBuilder {
 public:
  explicit JailBuilder(std::string root_dir);
  // A file or dir visible at its path; read-only or writable.
  JailBuilder& ReadOnly(const std::string& path);
  JailBuilder& Writable(const std::string& path);
  // A device node (for example /dev/kvm) usable by the jailed process.
  JailBuilder& Device(const std::string& path);
  // The steps, with the dirs leading to each path; fails naming a path that
  // does not exist or is not absolute.
  Result<std::vector<JailStep>> Build() const;

 private:
  struct Want {
    std::string path;
    JailStep::Kind kind;
  };
  std::string root_;
  std::vector<Want> wants_;
};

// Carries out `c` in a freshly forked child; false with the failing step's
// index (see DescribeStep) in *step and errno in *err. Async-signal-safe:
// for ChildProcess::Spawn.
bool ApplyConfinementInChild(const Confinement& c, int* step, int* err);

// The highest capability number of this kernel.
int LastCapability();

}  // namespace vmf
