#include "daemon/client.h"

#include "common/io.h"

namespace vmf {

std::string DefaultDaemonSocket(const std::string& runtime_dir) { return runtime_dir + "/daemon.sock"; }

Result<std::unique_ptr<DaemonClient>> DaemonClient::Connect(const std::string& socket_path) {
  VMF_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(socket_path));
  return std::unique_ptr<DaemonClient>(new DaemonClient(std::make_unique<ttrpc::Client>(std::move(fd))));
}

Result<vmfactory::v1::VM> DaemonClient::GetVM(uint32_t cpus, uint32_t memory_mib, const Deadline& deadline) {
  vmfactory::v1::GetVMRequest req;
  req.set_cpus(cpus);
  req.set_memory_mib(memory_mib);
  vmfactory::v1::VM vm;
  VMF_RETURN_IF_ERROR(client_->Call(kFactoryService, "GetVM", req, &vm, deadline));
  return vm;
}

Result<vmfactory::v1::StatusResponse> DaemonClient::GetStatus() {
  vmfactory::v1::Empty req;
  vmfactory::v1::StatusResponse resp;
  VMF_RETURN_IF_ERROR(
      client_->Call(kFactoryService, "Status", req, &resp, Deadline(std::chrono::seconds(10))));
  return resp;
}

Result<vmfactory::v1::ConfigResponse> DaemonClient::GetConfig() {
  vmfactory::v1::Empty req;
  vmfactory::v1::ConfigResponse resp;
  VMF_RETURN_IF_ERROR(
      client_->Call(kFactoryService, "Config", req, &resp, Deadline(std::chrono::seconds(10))));
  return resp;
}

Status DaemonClient::Quit() {
  vmfactory::v1::Empty req, resp;
  return client_->Call(kFactoryService, "Quit", req, &resp, Deadline(std::chrono::seconds(30)));
}

}  // namespace vmf
