// ttrpc::Server: a small ttrpc server on a listening unix socket.
//
// One thread per connection (bounded), requests on a connection handled in
// order. Malformed, oversized or unknown requests get an error reply; the
// server never trusts a client's sizes. Each handler sees the peer's
// credentials (SO_PEERCRED), which a client cannot forge.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace vmf::ttrpc {

struct Peer {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
};

using Handler = std::function<Result<std::string>(const std::string& payload, const Peer& peer)>;

class Server {
 public:
  explicit Server(size_t max_connections = 64) : max_connections_(max_connections) {}
  ~Server();
  // "service" is the fully qualified name, e.g. "vmfactory.v1.Factory".
  void Register(const std::string& service, const std::string& method, Handler handler);
  // Serves until Shutdown(); takes ownership of the listening socket.
  Status Serve(UniqueFd listen_fd);
  // Stops accepting, closes every connection, and makes Serve return.
  void Shutdown();

 private:
  void ServeConnection(int fd, Peer peer);
  std::string Dispatch(const std::string& frame_payload, const Peer& peer);

  size_t max_connections_;
  std::map<std::string, Handler> handlers_;  // "service/method"
  std::mutex mu_;
  bool stopping_ = false;
  UniqueFd wake_r_, wake_w_;
  std::map<int, std::thread> conns_;  // fd -> its thread
  std::vector<std::thread> finished_;
};

}  // namespace vmf::ttrpc
