// ttrpc::Server: a small ttrpc server on a listening unix socket.
//
// One thread per connection (bounded). By default a connection's requests
// are handled in order; with max_inflight > 1 each request runs on a thread
// of its own and replies go out as they are ready, as the Go ttrpc server
// does (containerd sends a blocking Wait and then, on the same connection,
// the Start that ends it). Malformed, oversized or unknown requests get an
// error reply; the server never trusts a client's sizes. Each handler sees the peer's
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
#include "ttrpc/frame.h"

namespace vmf::ttrpc {

struct Peer {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
};

using Handler = std::function<Result<std::string>(const std::string& payload, const Peer& peer)>;

class Server {
 public:
  // max_inflight: requests of one connection handled at once (1: in order);
  // a request past it is answered RESOURCE_EXHAUSTED.
  explicit Server(size_t max_connections = 64, size_t max_inflight = 1)
      : max_connections_(max_connections), max_inflight_(max_inflight) {}
  ~Server();
  // "service" is the fully qualified name, e.g. "vmfactory.v1.Factory".
  void Register(const std::string& service, const std::string& method, Handler handler);
  // Serves until Shutdown(); takes ownership of the listening socket.
  Status Serve(UniqueFd listen_fd);
  // Stops accepting, closes every connection, and makes Serve return.
  void Shutdown();

  // What a connection does with one decoded frame: returns the whole reply
  // frame to send, or "" when there is none (a frame that is not a request).
  // *last_id is the connection's highest accepted stream id (0 at first).
  // Serve uses it for every frame; public so that tests and fuzzers can drive
  // the request path without a socket.
  std::string HandleFrame(const DecodeEvent& ev, uint32_t* last_id, const Peer& peer);

 private:
  void ServeConnection(UniqueFd conn, Peer peer);
  std::string Dispatch(const std::string& frame_payload, const Peer& peer);

  size_t max_connections_;
  size_t max_inflight_;
  std::map<std::string, Handler> handlers_;  // "service/method"
  std::mutex mu_;
  bool stopping_ = false;
  UniqueFd wake_r_, wake_w_;
  std::map<int, std::jthread> conns_;   // fd (owned by its thread) -> the thread
  std::vector<std::jthread> finished_;  // ended, to be joined by Serve
};

}  // namespace vmf::ttrpc
