// ChannelServer: serves ttrpc on one byte-stream channel (the virtio-serial
// port in the guest, a socketpair end in tests) from a single-threaded poll()
// loop that also watches the processes' pipes and a signalfd for SIGCHLD.
//
// The protocol layer lives here: framing (bounded FrameDecoder), stream-id
// rules, the vmf-sync resync rule, and a bounded outbound queue written
// without blocking. Method semantics live in AgentService.
//
//   ChannelServer server(std::move(port_fd), ChannelServer::Options());
//   server.Run(nullptr);                // forever (guest)
//   while (!done) server.RunOnce(10);   // tests drive it step by step
//
// The constructor blocks SIGCHLD (routing it to the signalfd) and ignores
// SIGPIPE; the destructor restores both.
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>

#include "common/fd.h"
#include "service.h"
#include "ttrpc/frame.h"
#include "ttrpc/sync.h"
#include "ttrpc/wire.h"

namespace vmf::agent {

// Metadata key that marks a Health.Check request as a session resync (its
// home is ttrpc/sync.h, shared with the host).
using ttrpc::kSyncMetadataKey;

class ChannelServer {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    AgentService::Options service;
    // A partial frame with no new byte for this long is dropped.
    std::chrono::milliseconds partial_frame_timeout{1000};
    // After a hangup (no host connected) the channel is not watched this long.
    std::chrono::milliseconds hangup_pause{50};
    size_t max_outbound_bytes = 16u << 20;
  };

  explicit ChannelServer(UniqueFd channel);
  ChannelServer(UniqueFd channel, Options options);
  ~ChannelServer();
  ChannelServer(const ChannelServer&) = delete;
  ChannelServer& operator=(const ChannelServer&) = delete;

  // One loop iteration: poll() for at most max_wait_ms (-1: no limit of the
  // caller's own), then handle whatever is ready.
  void RunOnce(int max_wait_ms);
  // Iterates until *stop is true (stop may be null: forever).
  void Run(const std::atomic<bool>* stop);

  AgentService& service() { return service_; }
  size_t outbound_bytes() const { return out_bytes_; }
  uint32_t last_stream_id() const { return ids_.last(); }
  bool host_connected() const { return connected_; }

 private:
  void Reply(uint32_t stream_id, const ::ttrpc::Response& response);
  void ReplyError(uint32_t stream_id, Code code, const std::string& message);
  // Frames a response payload and queues it, dropping the oldest queued
  // replies if the queue is full.
  void Send(uint32_t stream_id, const std::string& payload);
  void ReadChannel(short revents);
  void HandleEvent(ttrpc::DecodeEvent& ev);
  void Flush();
  void DropOutbound();
  void OnHangup(Clock::time_point now);

  Options opt_;
  UniqueFd channel_;
  UniqueFd sigfd_;
  sigset_t old_mask_;
  struct sigaction old_sigpipe_;
  ttrpc::FrameDecoder decoder_;
  std::deque<std::string> out_;
  size_t out_offset_ = 0;  // bytes of out_.front() already written
  size_t out_bytes_ = 0;   // sum of out_ sizes
  ttrpc::StreamIdRule ids_;
  bool connected_ = true;
  bool nval_logged_ = false;
  Clock::time_point paused_until_{};
  Clock::time_point last_rx_{};
  AgentService service_;
};

// The agent's serving loop body: opens the virtio-serial port `name` (waiting
// up to 10 s for it to appear), logs "`banner` (N s since boot)" and serves it
// with a ChannelServer. Returns only if the port cannot be opened (serving
// itself ends only by an exception, which propagates). `pid1`: the agent is
// the guest's PID 1 and reaps every child. The caller decides whether and
// when to try again (PID 1 must never exit).
Status ServeOnPort(const std::string& name, bool pid1, const char* banner = "serving");

}  // namespace vmf::agent
