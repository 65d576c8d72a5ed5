// AgentClient: typed calls to the guest agent (grpc.AgentService, grpc.Health)
// through the VM's proxy. Each call has a deadline; calls may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/clock.h"
#include "common/status.h"
#include "health.pb.h"
#include "ttrpc/client.h"

namespace vmf {

struct ExecSpec {
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
  Result<int> WaitProcess(const std::string& exec_id, const Deadline& deadline);
  Status SignalProcess(const std::string& exec_id, int signal);
  // Blocks until output is available; an empty string means end of stream.
  Result<std::string> ReadStdout(const std::string& exec_id, const Deadline& deadline);
  Result<std::string> ReadStderr(const std::string& exec_id, const Deadline& deadline);
  Result<uint32_t> WriteStdin(const std::string& exec_id, const std::string& data);
  Status CloseStdin(const std::string& exec_id);

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
  Result<std::string> ReadStream(const std::string& method, const std::string& exec_id,
                                 const Deadline& deadline);

  std::unique_ptr<ttrpc::Client> client_;
  Duration call_timeout_;
};

}  // namespace vmf
