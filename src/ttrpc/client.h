// ttrpc::Client: a ttrpc client over a connected stream socket.
//
// Many threads may call at once: each call gets its own odd stream id, a
// reader thread routes responses back by id, and a reply whose id is not
// pending (a stale reply from before this connection) is dropped. Every call
// has a deadline; a closed connection fails every pending call at once.
//
//   VMF_ASSIGN_OR_RETURN(auto c, ttrpc::Client::Connect("/run/.../proxy.sock", Deadline(1s)));
//   grpc::HealthCheckResponse resp;
//   VMF_RETURN_IF_ERROR(c->Call("grpc.Health", "Check", req, &resp, Deadline(5s)));
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/fd.h"
#include "common/status.h"
#include "ttrpc/frame.h"

namespace vmf::ttrpc {

using Metadata = std::vector<std::pair<std::string, std::string>>;

class Client {
 public:
  static Result<std::unique_ptr<Client>> Connect(const std::string& socket_path, const Deadline& deadline);
  // first_stream_id must be odd; a random start makes replies meant for an
  // earlier session on the same byte stream unmatchable.
  explicit Client(UniqueFd fd, uint32_t first_stream_id = 1);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends one request and returns the response payload, or the response's
  // error status.
  Result<std::string> CallRaw(const std::string& service, const std::string& method,
                              const std::string& payload, const Deadline& deadline,
                              const Metadata& metadata = {});

  // Typed form: serialises req, parses the reply into *resp.
  template <typename Req, typename Resp>
  Status Call(const std::string& service, const std::string& method, const Req& req, Resp* resp,
              const Deadline& deadline, const Metadata& metadata = {}) {
    VMF_ASSIGN_OR_RETURN(std::string payload,
                         CallRaw(service, method, req.SerializeAsString(), deadline, metadata));
    if (!resp->ParseFromString(payload)) {
      return DataLoss("malformed " + resp->GetTypeName() + " in reply to " + service + "/" + method);
    }
    return OkStatus();
  }

  bool connected() const;
  // Closes the connection; pending and later calls fail with UNAVAILABLE.
  void Close();

 private:
  struct Pending {
    bool done = false;
    Status status;
    std::string payload;
  };
  void ReadLoop();
  void FailAllLocked(const Status& st);

  UniqueFd fd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::mutex write_mu_;
  uint32_t next_id_;
  bool closed_ = false;
  Status close_reason_;
  std::map<uint32_t, std::shared_ptr<Pending>> pending_;
  std::thread reader_;
};

// Maps a ttrpc Response status code/message to a vmf::Status.
Status StatusFromWire(int code, const std::string& message);

// What a decoded frame that answers a pending call means for that call: the
// reply payload, or the error it carries (oversized, malformed, an error
// status from the peer). Client::ReadLoop uses it; so does the fuzz target.
Result<std::string> DecodeResponse(const DecodeEvent& ev);

}  // namespace vmf::ttrpc
