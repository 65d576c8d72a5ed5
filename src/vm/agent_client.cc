#include "vm/agent_client.h"

#include <thread>

namespace vmf {
namespace {
constexpr uint32_t kReadChunk = 1u << 20;
}

Result<std::unique_ptr<AgentClient>> AgentClient::Connect(const std::string& url, Duration call_timeout,
                                                          const Deadline& deadline) {
  std::string path = url;
  if (path.rfind("unix://", 0) == 0) path = path.substr(7);
  VMF_ASSIGN_OR_RETURN(auto client, ttrpc::Client::Connect(path, deadline));
  return std::unique_ptr<AgentClient>(new AgentClient(std::move(client), call_timeout));
}

Status AgentClient::Check(const Deadline& deadline) {
  grpc::CheckRequest req;
  grpc::HealthCheckResponse resp;
  VMF_RETURN_IF_ERROR(client_->Call("grpc.Health", "Check", req, &resp, deadline));
  if (resp.status() != grpc::HealthCheckResponse::SERVING) {
    return Unavailable("agent health status is " + std::to_string(resp.status()));
  }
  return OkStatus();
}

Status AgentClient::WaitReady(const Deadline& deadline) {
  // The proxy holds requests until the agent channel is in sync, so one call
  // with the whole deadline is enough; it is repeated only if the proxy
  // answered with an error before the deadline. DATA_LOSS is final: the proxy
  // quarantined an agent that broke the protocol.
  Status st;
  do {
    st = Check(deadline);
    if (st.ok() || st.code() == Code::kDeadlineExceeded || st.code() == Code::kDataLoss ||
        !client_->connected()) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (!deadline.expired());
  return st.WithContext("agent did not become ready");
}

Result<std::string> AgentClient::Version() {
  grpc::CheckRequest req;
  grpc::VersionCheckResponse resp;
  VMF_RETURN_IF_ERROR(client_->Call("grpc.Health", "Version", req, &resp, Deadline(call_timeout_)));
  return resp.agent_version();
}

Status AgentClient::ExecProcess(const ExecSpec& spec) {
  grpc::ExecProcessRequest req;
  req.set_container_id(spec.container_id);
  req.set_exec_id(spec.exec_id);
  auto* p = req.mutable_process();
  for (const auto& a : spec.args) p->add_args(a);
  for (const auto& e : spec.env) p->add_env(e);
  p->set_cwd(spec.cwd);
  grpc::Empty resp;
  return Call("ExecProcess", req, &resp);
}

Result<int> AgentClient::WaitProcess(const ProcId& proc, const Deadline& deadline) {
  grpc::WaitProcessRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  grpc::WaitProcessResponse resp;
  VMF_RETURN_IF_ERROR(client_->Call("grpc.AgentService", "WaitProcess", req, &resp, deadline));
  return resp.status();
}

Status AgentClient::SignalProcess(const ProcId& proc, int signal) {
  grpc::SignalProcessRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  req.set_signal(static_cast<uint32_t>(signal));
  grpc::Empty resp;
  return Call("SignalProcess", req, &resp);
}

Result<std::string> AgentClient::ReadStream(const std::string& method, const ProcId& proc,
                                            const Deadline& deadline) {
  grpc::ReadStreamRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  req.set_len(kReadChunk);
  grpc::ReadStreamResponse resp;
  VMF_RETURN_IF_ERROR(client_->Call("grpc.AgentService", method, req, &resp, deadline));
  return std::move(*resp.mutable_data());
}

Result<std::string> AgentClient::ReadStdout(const ProcId& proc, const Deadline& deadline) {
  return ReadStream("ReadStdout", proc, deadline);
}

Result<std::string> AgentClient::ReadStderr(const ProcId& proc, const Deadline& deadline) {
  return ReadStream("ReadStderr", proc, deadline);
}

Result<uint32_t> AgentClient::WriteStdin(const ProcId& proc, const std::string& data) {
  grpc::WriteStreamRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  req.set_data(data);
  grpc::WriteStreamResponse resp;
  VMF_RETURN_IF_ERROR(Call("WriteStdin", req, &resp));
  return resp.len();
}

Status AgentClient::CloseStdin(const ProcId& proc) {
  grpc::CloseStdinRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  grpc::Empty resp;
  return Call("CloseStdin", req, &resp);
}

Status AgentClient::CreateContainer(const grpc::CreateContainerRequest& req) {
  grpc::Empty resp;
  return Call("CreateContainer", req, &resp);
}

Status AgentClient::StartContainer(const std::string& container_id) {
  grpc::StartContainerRequest req;
  req.set_container_id(container_id);
  grpc::Empty resp;
  return Call("StartContainer", req, &resp);
}

Status AgentClient::RemoveContainer(const std::string& container_id, uint32_t timeout_s) {
  grpc::RemoveContainerRequest req;
  req.set_container_id(container_id);
  req.set_timeout(timeout_s);
  grpc::Empty resp;
  return Call("RemoveContainer", req, &resp);
}

Status AgentClient::TtyWinResize(const ProcId& proc, uint32_t rows, uint32_t columns) {
  grpc::TtyWinResizeRequest req;
  req.set_container_id(proc.container_id);
  req.set_exec_id(proc.exec_id);
  req.set_row(rows);
  req.set_column(columns);
  grpc::Empty resp;
  return Call("TtyWinResize", req, &resp);
}

Status AgentClient::PauseContainer(const std::string& container_id) {
  grpc::PauseContainerRequest req;
  req.set_container_id(container_id);
  grpc::Empty resp;
  return Call("PauseContainer", req, &resp);
}

Status AgentClient::ResumeContainer(const std::string& container_id) {
  grpc::ResumeContainerRequest req;
  req.set_container_id(container_id);
  grpc::Empty resp;
  return Call("ResumeContainer", req, &resp);
}

Status AgentClient::UpdateContainer(const std::string& container_id, const grpc::LinuxResources& resources) {
  grpc::UpdateContainerRequest req;
  req.set_container_id(container_id);
  *req.mutable_resources() = resources;
  grpc::Empty resp;
  return Call("UpdateContainer", req, &resp);
}

Result<grpc::StatsContainerResponse> AgentClient::StatsContainer(const std::string& container_id) {
  grpc::StatsContainerRequest req;
  req.set_container_id(container_id);
  grpc::StatsContainerResponse resp;
  VMF_RETURN_IF_ERROR(Call("StatsContainer", req, &resp));
  return resp;
}

Result<std::string> AgentClient::GetOomEvent(const Deadline& deadline) {
  grpc::GetOOMEventRequest req;
  grpc::OOMEvent resp;
  VMF_RETURN_IF_ERROR(client_->Call("grpc.AgentService", "GetOOMEvent", req, &resp, deadline));
  return resp.container_id();
}

Status AgentClient::OnlineCPUMem(uint32_t nb_cpus, bool cpu_only) {
  grpc::OnlineCPUMemRequest req;
  req.set_wait(true);
  req.set_nb_cpus(nb_cpus);
  req.set_cpu_only(cpu_only);
  grpc::Empty resp;
  return Call("OnlineCPUMem", req, &resp);
}

Status AgentClient::ReseedRandomDev(const std::string& data) {
  grpc::ReseedRandomDevRequest req;
  req.set_data(data);
  grpc::Empty resp;
  return Call("ReseedRandomDev", req, &resp);
}

Result<grpc::GuestDetailsResponse> AgentClient::GetGuestDetails() {
  grpc::GuestDetailsRequest req;
  req.set_mem_block_size(true);
  req.set_mem_hotplug_probe(true);
  grpc::GuestDetailsResponse resp;
  VMF_RETURN_IF_ERROR(Call("GetGuestDetails", req, &resp));
  return resp;
}

Status AgentClient::SetGuestDateTime(int64_t sec, int64_t usec) {
  grpc::SetGuestDateTimeRequest req;
  req.set_sec(sec);
  req.set_usec(usec);
  grpc::Empty resp;
  return Call("SetGuestDateTime", req, &resp);
}

Status AgentClient::SetHostname(const std::string& hostname) {
  grpc::CreateSandboxRequest req;
  req.set_hostname(hostname);
  grpc::Empty resp;
  return Call("CreateSandbox", req, &resp);
}

}  // namespace vmf
