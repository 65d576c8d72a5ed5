// AgentService: the methods of grpc.AgentService and grpc.Health, served to
// one ttrpc peer from a single-threaded poll() loop (see server.h).
//
// HandleRequest() takes one decoded ttrpc::Request and answers it through the
// reply callback, either at once or later: ReadStdout/ReadStderr with nothing
// buffered and WaitProcess before the exit are deferred and answered from
// HandlePollFds()/ReapChildren() when output, EOF or the exit arrives.
//
// This class is the dispatcher: it parses each request, checks it, calls the
// part that does the job and turns the result into the reply. The jobs live
// in spawn.h (fork/exec of one process, in a container or not),
// process_table.h (the processes it starts: pipes, buffers, waiters, exits),
// container.h (OCI containers: spec, storages, cgroup, state) and
// guest_ops.h (CPU/memory onlining, RNG, clock, hostname, sysfs). An
// unparsable payload is answered INVALID_ARGUMENT, an unknown service or
// method UNIMPLEMENTED.
//
// Containers (the Kata agent's calls): CreateContainer records a container
// (storages mounted, cgroup made; nothing runs yet), StartContainer starts its
// init as the process (container id, exec id of the create), so the stdio,
// wait and signal calls work on it as on any process. ExecProcess with the id
// of a started container runs the process inside it (any other container id:
// in the VM, as before). SignalProcess with an empty exec id signals every
// process of the container. RemoveContainer kills and reaps what is left,
// unmounts the storages and forgets the container. TtyWinResize resizes the
// terminal of a process started with Process.Terminal. Pause/Resume, Update
// and StatsContainer work on the container's cgroup (UNAVAILABLE without one).
//
// The service owns the processes it starts (pipes, buffers, pid). All buffers
// are bounded: 1 MiB per output stream per process (the pipe is no longer
// read while full), 1 MiB of pending stdin per process, and at most
// Options::max_processes processes (see process_table.h).
//
//   AgentService svc([&](uint32_t id, const ::ttrpc::Response& r) { Send(id, r); });
//   svc.HandleRequest(3, request);          // may reply now or later
//   loop: svc.AddPollFds(&fds); poll(...); svc.HandlePollFds(...);
//         svc.ReapChildren(); svc.CollectGarbage();
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "container.h"
#include "guest_ops.h"
#include "oom_watch.h"
#include "process_table.h"
#include "ttrpc.pb.h"

namespace vmf::agent {

class AgentService {
 public:
  using ReplyFn = std::function<void(uint32_t stream_id, const ::ttrpc::Response& response)>;
  using Clock = std::chrono::steady_clock;

  // The process table's limits (process_table.h), plus the service's own.
  struct Options : ProcessTable::Limits {
    // Roots for the sysfs/dev files touched by OnlineCPUMem, GetGuestDetails
    // and ReseedRandomDev (tests point them elsewhere).
    std::string sysfs_root = "/sys";
    std::string random_device = "/dev/random";
    // How long OnlineCPUMem with wait=true waits for the CPUs asked for.
    std::chrono::milliseconds online_wait{2000};
    // Host-safe mode, for running the service in-process on a host (the
    // fuzzer, as root): false makes ExecProcess check its request and then
    // refuse it (PERMISSION_DENIED) instead of starting a process, and makes
    // SetGuestDateTime and CreateSandbox check their request and answer OK
    // without setting the clock or the hostname.
    // CreateContainer, too, needs both: with either false it checks its
    // request and then refuses it (PERMISSION_DENIED) without mounting.
    bool allow_exec = true;
    bool allow_system_changes = true;
    // Containers (container.h): how many at most; where block storages are
    // looked up (<sysfs_root>/block) and their nodes made, and for how long
    // one is waited for; the cgroup root ("" = no cgroups) and the name of
    // the group under the agent's own that holds the containers' groups.
    size_t max_containers = 64;
    std::string dev_root = "/dev";
    std::chrono::milliseconds storage_wait{10000};
    std::string cgroup_root = "/sys/fs/cgroup";
    std::string cgroup_parent = "vmfactory";
  };

  explicit AgentService(ReplyFn reply);
  AgentService(ReplyFn reply, Options options);
  // Kills (SIGKILL, whole process group) and reaps every process still running.
  ~AgentService();
  AgentService(const AgentService&) = delete;
  AgentService& operator=(const AgentService&) = delete;

  // Dispatches one request; the reply goes to the callback now or later.
  void HandleRequest(uint32_t stream_id, const ::ttrpc::Request& request);

  // A new host session began: forget every deferred reply (they are never
  // answered). Processes and their buffered output are kept.
  void DropDeferred();

  // poll() integration: AddPollFds appends the fds to watch (the pipes,
  // the containers' OOM notifiers); after
  // poll(), HandlePollFds gets exactly that range back (same order).
  void AddPollFds(std::vector<pollfd>* fds);
  void HandlePollFds(const pollfd* fds, size_t count);

  // Collects exited children (waitpid WNOHANG) and answers their waiters.
  void ReapChildren();
  // Forgets finished processes; call once per loop iteration.
  void CollectGarbage();

  size_t process_count() const { return procs_.size(); }
  size_t container_count() const { return containers_.size(); }
  size_t deferred_count() const;

 private:
  void ReplyOk(uint32_t id, const std::string& payload);
  void ReplyError(uint32_t id, const Status& status);
  template <typename Req>
  bool Parse(uint32_t id, const std::string& payload, Req* req);

  void DoExec(uint32_t id, const std::string& payload);
  void DoWait(uint32_t id, const std::string& payload);
  void DoSignal(uint32_t id, const std::string& payload);
  void DoWriteStdin(uint32_t id, const std::string& payload);
  void DoRead(uint32_t id, const std::string& payload, bool stderr_stream);
  void DoCloseStdin(uint32_t id, const std::string& payload);
  void DoOnlineCpuMem(uint32_t id, const std::string& payload);
  void DoReseed(uint32_t id, const std::string& payload);
  void DoGuestDetails(uint32_t id, const std::string& payload);
  void DoSetTime(uint32_t id, const std::string& payload);
  void DoCreateSandbox(uint32_t id, const std::string& payload);
  void DoCreateContainer(uint32_t id, const std::string& payload);
  void DoStartContainer(uint32_t id, const std::string& payload);
  void DoRemoveContainer(uint32_t id, const std::string& payload);
  void DoTtyWinResize(uint32_t id, const std::string& payload);
  void DoFreeze(uint32_t id, const std::string& payload, bool frozen);
  void DoUpdateContainer(uint32_t id, const std::string& payload);
  void DoStatsContainer(uint32_t id, const std::string& payload);
  void DoGetOomEvent(uint32_t id, const std::string& payload);
  // The container id names a started container whose init still runs.
  Result<Container*> RunningContainer(const std::string& cid);
  // How the process table's read and wait answers become replies.
  ProcessTable::Answers TableAnswers();

  ReplyFn reply_;
  Options opt_;
  GuestOps guest_;
  Containers containers_;  // destroyed after procs_: the processes go first
  ProcessTable procs_;
  OomWatch oom_;             // watches containers_' cgroups: destroyed first
  size_t procs_polled_ = 0;  // how many fds of AddPollFds are procs_'
};

}  // namespace vmf::agent
