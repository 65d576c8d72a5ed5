// Spawn: starts one guest process for ExecProcess, with fork/exec.
//
// The child gets its own session and process group (so a signal can reach the
// whole group), default signal dispositions and an empty signal mask, pipes
// as stdin/stdout/stderr, the requested uid/gid (0 = keep root) and cwd, and
// no other inherited fd. The executable is searched like execvp, in the PATH
// of the request's environment (kDefaultPath when it has none).
//
// The request comes from the host: arguments, environment and cwd containing
// a NUL byte are refused (INVALID_ARGUMENT) rather than truncated. A failure
// between fork and exec (setsid, dup2, setgid, setuid, chdir, exec) is sent
// back over a CLOEXEC report pipe, so Spawn returns it as an errno status
// naming the stage (e.g. NOT_FOUND "chdir /no/such/dir") and the child is
// already reaped.
//
//   Result<Spawned> s = Spawn(request.process());
//   if (s.ok()) table.Add(cid, eid, std::move(*s));  // fds are non-blocking
#pragma once

#include <sys/types.h>

#include "agent.pb.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf::agent {

inline constexpr char kDefaultPath[] = "/usr/sbin:/usr/bin:/sbin:/bin";

// A started process: its pid and our non-blocking ends of its three pipes.
struct Spawned {
  pid_t pid = -1;
  UniqueFd in, out, err;
};

// Starts proc (INVALID_ARGUMENT if it has no Args). Without any Env the process
// gets PATH=kDefaultPath and HOME=/root; without a Cwd it runs in "/".
Result<Spawned> Spawn(const grpc::Process& proc);

}  // namespace vmf::agent
