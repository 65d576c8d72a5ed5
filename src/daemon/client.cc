#include "daemon/client.h"

#include <thread>

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

Result<vmfactory::v1::StatusResponse> WaitForFullPool(const std::string& socket, int pool,
                                                      const Deadline& deadline,
                                                      const std::function<Status()>& still_waiting,
                                                      bool none_handed_out, int restore_targets) {
  Status last = DeadlineExceeded("the daemon never answered");
  while (!deadline.expired()) {
    VMF_RETURN_IF_ERROR(still_waiting());
    auto c = DaemonClient::Connect(socket);
    auto s = c.ok() ? (*c)->GetStatus() : Result<vmfactory::v1::StatusResponse>(c.status());
    if (s.ok()) {
      const auto& r = s->restore();
      if (s->ready_size() == pool && s->booting() == 0 && (!none_handed_out || s->handed_out_size() == 0) &&
          r.waiting_size() == restore_targets && r.starting() == 0) {
        return s;
      }
      last = DeadlineExceeded("pool at " + std::to_string(s->ready_size()) + " of " + std::to_string(pool) +
                              ", last error: " + s->last_error() + "; restore targets at " +
                              std::to_string(r.waiting_size()) + " of " + std::to_string(restore_targets) +
                              (r.last_error().empty() ? "" : ", last error: " + r.last_error()));
    } else {
      last = s.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return last;
}

}  // namespace vmf
