// TestPeer: a host-side ttrpc peer for driving a ChannelServer in-process over
// a socketpair, one loop iteration at a time (no threads). Header-only and
// gtest-free; used by the agent tests next to it (tests/unit/agent_*_test.cc).
//
//   TestPeer peer;
//   ::ttrpc::Response r = peer.Call("grpc.Health", "Check", grpc::CheckRequest());
//   peer.SendRaw(half_frame);  peer.Drive(1100ms);
#pragma once

#include <fcntl.h>
#include <google/protobuf/message_lite.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"

namespace vmf::agent {

class TestPeer {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TestPeer(const ChannelServer::Options& options = ChannelServer::Options()) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) ::abort();
    ::fcntl(sv[0], F_SETFL, O_NONBLOCK);
    ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
    peer_.reset(sv[1]);
    server_ = std::make_unique<ChannelServer>(UniqueFd(sv[0]), options);
  }

  ChannelServer& server() { return *server_; }
  AgentService& service() { return server_->service(); }
  int peer_fd() const { return peer_.get(); }
  void ClosePeer() { peer_.reset(); }

  // Writes bytes to the server, driving it meanwhile so large writes progress.
  void SendRaw(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(peer_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) bytes.remove_prefix(static_cast<size_t>(n));
      Step(n > 0 ? 0 : 5);
    }
  }

  void SendRequest(uint32_t id, const std::string& service, const std::string& method,
                   const google::protobuf::MessageLite& msg, bool sync = false) {
    ::ttrpc::Request req;
    req.set_service(service);
    req.set_method(method);
    req.set_payload(msg.SerializeAsString());
    if (sync) {
      auto* kv = req.add_metadata();
      kv->set_key(kSyncMetadataKey);
      kv->set_value("nonce");
    }
    SendRaw(ttrpc::EncodeFrame(id, ttrpc::kTypeRequest, 0, req.SerializeAsString()));
  }

  // One server iteration, then collect whatever the server wrote.
  void Step(int wait_ms) {
    server_->RunOnce(wait_ms);
    Collect();
  }

  // Drives the server for d, collecting replies.
  void Drive(std::chrono::milliseconds d) {
    auto end = Clock::now() + d;
    while (Clock::now() < end) Step(5);
  }

  // Waits (driving the server) for the reply frame on stream id.
  std::optional<ttrpc::Frame> WaitFrame(uint32_t id,
                                        std::chrono::milliseconds timeout = std::chrono::milliseconds(2500)) {
    auto end = Clock::now() + timeout;
    while (true) {
      auto it = frames_.find(id);
      if (it != frames_.end() && !it->second.empty()) {
        ttrpc::Frame f = std::move(it->second.front());
        it->second.pop_front();
        return f;
      }
      if (Clock::now() >= end) return std::nullopt;
      Step(5);
    }
  }

  std::optional<::ttrpc::Response> WaitResponse(
      uint32_t id, std::chrono::milliseconds timeout = std::chrono::milliseconds(2500)) {
    std::optional<ttrpc::Frame> f = WaitFrame(id, timeout);
    if (!f) return std::nullopt;
    ::ttrpc::Response r;
    if (f->type != ttrpc::kTypeResponse || !r.ParseFromString(f->payload)) {
      r.mutable_status()->set_code(-1);
      r.mutable_status()->set_message("test peer: not a response frame");
    }
    return r;
  }

  // Sends on the next odd stream id and waits for the reply; a missing reply
  // comes back as code -2.
  ::ttrpc::Response Call(const std::string& service, const std::string& method,
                         const google::protobuf::MessageLite& msg,
                         std::chrono::milliseconds timeout = std::chrono::milliseconds(2500)) {
    uint32_t id = NextId();
    SendRequest(id, service, method, msg);
    std::optional<::ttrpc::Response> r = WaitResponse(id, timeout);
    if (r) return *r;
    ::ttrpc::Response none;
    none.mutable_status()->set_code(-2);
    none.mutable_status()->set_message("test peer: no reply");
    return none;
  }

  uint32_t NextId() {
    next_id_ += 2;
    return next_id_;
  }
  void SetNextId(uint32_t last) { next_id_ = last; }
  bool HasFrame(uint32_t id) const {
    auto it = frames_.find(id);
    return it != frames_.end() && !it->second.empty();
  }
  size_t received_frames() const { return received_; }

 private:
  void Collect() {
    if (!peer_) return;
    char buf[65536];
    while (true) {
      ssize_t n = ::recv(peer_.get(), buf, sizeof(buf), 0);
      if (n <= 0) return;
      std::vector<ttrpc::DecodeEvent> evs;
      decoder_.Feed(std::string_view(buf, static_cast<size_t>(n)), &evs);
      for (ttrpc::DecodeEvent& ev : evs) {
        ++received_;
        frames_[ev.frame.stream_id].push_back(std::move(ev.frame));
      }
    }
  }

  UniqueFd peer_;
  std::unique_ptr<ChannelServer> server_;
  ttrpc::FrameDecoder decoder_;
  std::map<uint32_t, std::deque<ttrpc::Frame>> frames_;
  uint32_t next_id_ = static_cast<uint32_t>(-1);  // first NextId() is 1
  size_t received_ = 0;
};

}  // namespace vmf::agent
