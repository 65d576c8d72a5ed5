// Spawn: starts one guest process for ExecProcess or StartContainer, with
// fork/exec (clone for a container's init).
//
// The child gets its own session and process group (so a signal can reach the
// whole group), default signal dispositions and an empty signal mask, pipes
// as stdin/stdout/stderr (or, with Process.Terminal, a pty: the slave as
// 0/1/2 and controlling terminal, our end the master), the requested
// resource limits, supplementary groups, gid and uid (0 = keep root), cwd and
// no_new_privs, and no other inherited fd. The executable is searched like
// execvp, in the PATH of the request's environment (kDefaultPath when it has
// none).
//
// With SpawnOptions::init the child is a container's init: it is cloned into
// new PID, mount, UTS and IPC namespaces and, before the steps above, builds
// the container's filesystem from a ContainerInit (see there) and enters it.
// With SpawnOptions::join it runs inside the namespaces and root of a running
// container's init instead (ExecProcess into a container): the agent enters
// the init's PID namespace for its children around the fork, so the pid
// returned is the process that runs the command.
//
// The request comes from the host: arguments, environment and cwd containing
// a NUL byte are refused (INVALID_ARGUMENT) rather than truncated. A failure
// between fork and exec (setsid, dup2, a mount, setgid, setuid, chdir,
// exec...) is sent back over a CLOEXEC report pipe, so Spawn returns it as
// an errno status naming the stage (e.g. NOT_FOUND "chdir /no/such/dir",
// "mount proc on /proc: ...") and the child is already reaped.
//
//   Result<Spawned> s = Spawn(request.process());
//   if (s.ok()) table.Add(cid, eid, std::move(*s));  // fds are non-blocking
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf::agent {

inline constexpr char kDefaultPath[] = "/usr/sbin:/usr/bin:/sbin:/bin";

// A started process: its pid and our non-blocking ends of its three pipes.
// With a terminal, in and out are the pty master (two fds), err is invalid
// (the stream is at EOF from the start) and tty is the master once more, for
// TIOCSWINSZ.
struct Spawned {
  pid_t pid = -1;
  UniqueFd in, out, err;
  UniqueFd tty;
};

// One mount of a container's filesystem, prepared before the clone. Targets
// are paths inside the container: the mounts are made after the child
// entered its rootfs (so a symlink in the image cannot lead a target out of
// it); a bind source is a guest path, opened (open_tree) before that.
struct MountStep {
  enum class Kind { kMount, kBind };
  Kind kind = Kind::kMount;
  std::string source;  // kMount: the file system's source ("proc"); kBind: a guest path
  std::string target;  // absolute, inside the container
  std::string fstype;  // kMount only
  std::string data;    // kMount only: options mount(2) passes to the file system
  // MS_* flags: for kMount given to mount(2); for kBind applied by a
  // remount of the bind (MS_RDONLY, MS_NOSUID, ...) when there are any.
  unsigned long flags = 0;
  unsigned long propagation = 0;  // MS_PRIVATE, MS_SLAVE|MS_REC, ...: applied after the mount
  bool recursive = false;         // kBind: rbind
  bool optional = false;          // a failure is ignored (mqueue on a kernel without it)
};

// How a container's init builds its filesystem, in this order: "/" made
// private recursively; rootfs bind-mounted on itself; every bind source
// opened; the rootfs entered (chdir, MS_MOVE onto "/", chroot: pivot_root
// does not work from an initramfs); each mount made, its target created
// (a directory, or an empty file when a bind's source is a file); when
// populate_dev, device nodes (null, zero, full, random, urandom, tty) and
// links (fd, stdin, stdout, stderr, ptmx) in /dev; "/" remounted read-only
// when readonly_root; masked paths hidden (/dev/null bound over a file, a
// read-only tmpfs over a directory) and read-only paths bound read-only
// (missing ones are skipped); the hostname set when not empty.
struct ContainerInit {
  std::string rootfs;    // absolute guest path of the container's root directory
  std::string hostname;  // not set when the UTS namespace is shared
  // The init pid of a running container (a pod's sandbox) whose IPC, UTS or
  // PID namespace this one joins instead of making its own (-1: its own).
  pid_t share_ipc_with = -1;
  pid_t share_uts_with = -1;
  pid_t share_pid_with = -1;
  std::vector<MountStep> mounts;
  bool populate_dev = false;
  bool readonly_root = false;
  std::vector<std::string> masked_paths;
  std::vector<std::string> readonly_paths;
};

// A running container to start a process in: the namespaces (mount, UTS,
// IPC, PID) and root directory of its init.
struct ContainerJoin {
  pid_t init_pid = -1;
};

struct SpawnOptions {
  const ContainerInit* init = nullptr;  // a container's init (new namespaces)
  const ContainerJoin* join = nullptr;  // a process in a running container
  // Runs in the agent after the fork, before the child takes any step (the
  // child waits for it on a go-ahead pipe): e.g. putting the pid in a cgroup.
  // An error kills and reaps the child and is Spawn's answer.
  std::function<Status(pid_t pid)> before_start;
};

// Starts proc (INVALID_ARGUMENT if it has no Args, an unknown rlimit, or
// both init and join). Without any Env the process gets PATH=kDefaultPath
// and HOME=/root; without a Cwd it runs in "/".
Result<Spawned> Spawn(const grpc::Process& proc, const SpawnOptions& options = SpawnOptions());

// The resource number of an OCI rlimit type ("RLIMIT_NOFILE"), or -1.
int RlimitResource(const std::string& type);

}  // namespace vmf::agent
