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
// in spawn.h (fork/exec of one process), process_table.h (the processes it
// starts: pipes, buffers, waiters, exits) and guest_ops.h (CPU/memory
// onlining, RNG, clock, hostname, sysfs). An unparsable payload is answered
// INVALID_ARGUMENT, an unknown service or method UNIMPLEMENTED.
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
#include "guest_ops.h"
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
    bool allow_exec = true;
    bool allow_system_changes = true;
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

  // poll() integration: AddPollFds appends the pipe fds to watch; after
  // poll(), HandlePollFds gets exactly that range back (same order).
  void AddPollFds(std::vector<pollfd>* fds);
  void HandlePollFds(const pollfd* fds, size_t count);

  // Collects exited children (waitpid WNOHANG) and answers their waiters.
  void ReapChildren();
  // Forgets finished processes; call once per loop iteration.
  void CollectGarbage();

  size_t process_count() const { return procs_.size(); }
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
  // How the process table's read and wait answers become replies.
  ProcessTable::Answers TableAnswers();

  ReplyFn reply_;
  Options opt_;
  GuestOps guest_;
  ProcessTable procs_;
};

}  // namespace vmf::agent
