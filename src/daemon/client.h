// DaemonClient: talks to `vmfactory serve` over its unix socket.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "factory.pb.h"
#include "ttrpc/client.h"
#include "vm/vm.h"

namespace vmf {

inline constexpr const char* kFactoryService = "vmfactory.v1.Factory";

// RUNTIME/daemon.sock
std::string DefaultDaemonSocket(const std::string& runtime_dir);

class DaemonClient {
 public:
  // Fails at once (UNAVAILABLE/NOT_FOUND) if no daemon listens there.
  static Result<std::unique_ptr<DaemonClient>> Connect(const std::string& socket_path);

  Result<vmfactory::v1::VM> GetVM(uint32_t cpus, uint32_t memory_mib, const Deadline& deadline);
  Result<vmfactory::v1::StatusResponse> GetStatus();
  Result<vmfactory::v1::ConfigResponse> GetConfig();
  Status Quit();

 private:
  explicit DaemonClient(std::unique_ptr<ttrpc::Client> c) : client_(std::move(c)) {}
  std::unique_ptr<ttrpc::Client> client_;
};

// Asks the daemon at `socket` for its status every 50 ms until its pool holds
// `pool` ready VMs with none booting (and, with none_handed_out, none handed
// out; with restore_targets, that many restore targets waiting), and
// returns that status. `still_waiting` is asked before each try: a
// non-OK answer (the daemon exited, the wait was cancelled) ends the wait
// with it. Past the deadline: the last reason the pool was not full.
Result<vmfactory::v1::StatusResponse> WaitForFullPool(const std::string& socket, int pool,
                                                      const Deadline& deadline,
                                                      const std::function<Status()>& still_waiting,
                                                      bool none_handed_out = false, int restore_targets = 0);

}  // namespace vmf
