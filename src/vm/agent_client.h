// AgentClient: typed calls to the guest agent (grpc.AgentService, grpc.Health)
// through the VM's proxy. Each call has a deadline; calls may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent.pb.h"
#include "common/clock.h"
#include "common/status.h"
#include "health.pb.h"
#include "ttrpc/client.h"

namespace vmf {

// A process in the guest: exec_id alone names one started in the VM itself
// (ExecProcess without a container); with a container_id, one of that
// container's (its init's exec id is the one given at CreateContainer).
struct ProcId {
  ProcId(std::string exec) : exec_id(std::move(exec)) {}  // NOLINT: implicit on purpose
  ProcId(const char* exec) : exec_id(exec) {}             // NOLINT
  ProcId(std::string container, std::string exec)
      : container_id(std::move(container)), exec_id(std::move(exec)) {}
  std::string container_id;
  std::string exec_id;
};

struct ExecSpec {
  std::string container_id;  // empty: in the VM itself, not in a container
  std::string exec_id;
  std::vector<std::string> args;
  std::vector<std::string> env;  // empty: the agent's default PATH and HOME
  std::string cwd;               // empty: /
};

class AgentClient {
 public:
  // Connects to the proxy's socket (url "unix:///path" or a plain path).
  static Result<std::unique_ptr<AgentClient>> Connect(const std::string& url, Duration call_timeout,
                                                      const Deadline& deadline);

  // Health.Check until the agent answers SERVING or the deadline passes; stops
  // early on DATA_LOSS (the proxy quarantined an agent that broke the protocol).
  Status WaitReady(const Deadline& deadline);
  Status Check(const Deadline& deadline);
  Result<std::string> Version();

  Status ExecProcess(const ExecSpec& spec);
  // Blocks until the process exits; returns its exit code (128+N if killed by signal N).
  Result<int> WaitProcess(const ProcId& proc, const Deadline& deadline);
  // An empty exec_id with a container_id signals all of that container's
  // processes.
  Status SignalProcess(const ProcId& proc, int signal);
  // Blocks until output is available; an empty string means end of stream.
  Result<std::string> ReadStdout(const ProcId& proc, const Deadline& deadline);
  Result<std::string> ReadStderr(const ProcId& proc, const Deadline& deadline);
  Result<uint32_t> WriteStdin(const ProcId& proc, const std::string& data);
  Status CloseStdin(const ProcId& proc);

  // OCI containers (the agent's container calls, Kata's API).
  Status CreateContainer(const grpc::CreateContainerRequest& req);
  Status StartContainer(const std::string& container_id);
  Status RemoveContainer(const std::string& container_id, uint32_t timeout_s);
  Status TtyWinResize(const ProcId& proc, uint32_t rows, uint32_t columns);
  Status PauseContainer(const std::string& container_id);
  Status ResumeContainer(const std::string& container_id);
  Status UpdateContainer(const std::string& container_id, const grpc::LinuxResources& resources);
  Result<grpc::StatsContainerResponse> StatsContainer(const std::string& container_id);
  // Blocks until a container of the VM has had a process OOM-killed (or the
  // deadline): that container's id, as the guest says it (unchecked).
  Result<std::string> GetOomEvent(const Deadline& deadline);

  Status OnlineCPUMem(uint32_t nb_cpus, bool cpu_only);
  Status ReseedRandomDev(const std::string& data);
  Result<grpc::GuestDetailsResponse> GetGuestDetails();
  Status SetGuestDateTime(int64_t sec, int64_t usec);
  Status SetHostname(const std::string& hostname);

  void Close() { client_->Close(); }

 private:
  AgentClient(std::unique_ptr<ttrpc::Client> client, Duration call_timeout)
      : client_(std::move(client)), call_timeout_(call_timeout) {}
  template <typename Req, typename Resp>
  Status Call(const std::string& method, const Req& req, Resp* resp) {
    return client_->Call("grpc.AgentService", method, req, resp, Deadline(call_timeout_));
  }
  Result<std::string> ReadStream(const std::string& method, const ProcId& proc, const Deadline& deadline);

  std::unique_ptr<ttrpc::Client> client_;
  Duration call_timeout_;
};

}  // namespace vmf
