// AgentSession: the proxy's side of the agent channel as a state machine
// with no sockets, timers or threads (see proxy.h for the protocol it keeps).
//
// The owner feeds it what happens (the channel connected, bytes arrived from
// the agent, a client sent a request or went away, a timer fired, the proxy
// stops) and carries out the actions it returns, in order: bytes to write on
// the channel, frames to send to a client, and notices to log.
//
//   AgentSession session(options);
//   Do(session.OnConnected(Clock::now()));           // sends the sync request
//   Do(session.OnAgentBytes(bytes, Clock::now()));   // replies routed to clients
//   if (auto t = session.NextTimer()) ArmTimerAt(*t);  // then Do(session.OnTimer(now))
//
// Everything from the agent is untrusted and bounded: see the constants.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "ttrpc/frame.h"
#include "ttrpc/sync.h"
#include "ttrpc/wire.h"

namespace vmf {

struct AgentSessionOptions {
  // Longest silence allowed in the middle of a frame from the agent; then the
  // pending calls fail with UNAVAILABLE and the channel is synchronised again.
  Duration frame_timeout = std::chrono::seconds(5);
  // The sync request is re-sent this often until its reply arrives (the agent
  // drops a half frame after one second of silence).
  Duration sync_retry = std::chrono::milliseconds(1500);
  // Where the random sync ids come from (each is made odd and below 2^30).
  // Empty: std::random_device. Tests pass a seeded generator.
  std::function<uint32_t()> random;
  // Channel stream ids wrap back to 1 on reaching this; tests lower it.
  uint32_t wrap_at = 0x7fffffffu;
};

class AgentSession {
 public:
  using ClientId = uint64_t;

  // Request frames queued before the sync reply, in bytes.
  static constexpr size_t kMaxPresyncQueue = 64u << 20;
  // Stale bytes accepted before the sync reply: an earlier session leaves at
  // most one frame; an agent that sends more is not answering the sync.
  static constexpr uint64_t kMaxPresyncBytes = 8u << 20;
  // Requests in flight per client.
  static constexpr size_t kMaxPendingPerClient = 4096;

  // Bytes to write on the agent channel.
  struct SendToAgent {
    std::string bytes;
  };
  // A whole frame to send to a client, on its stream `stream`.
  struct ReplyToClient {
    ClientId client;
    uint32_t stream;
    std::string frame;
  };
  // Something to log.
  struct Notice {
    enum Kind {
      kSynced,            // debug: the sync reply arrived
      kResynced,          // warning: a stalled frame; pending calls failed
      kQuarantined,       // error: a protocol violation
      kLateReplyDropped,  // debug: a reply for a client that has gone
    };
    Kind kind;
    std::string message;
  };
  using Action = std::variant<SendToAgent, ReplyToClient, Notice>;
  using Actions = std::vector<Action>;

  explicit AgentSession(AgentSessionOptions options = {});

  // The channel is connected: a new session starts (sync request sent).
  Actions OnConnected(Clock::time_point now);
  // Bytes read from the agent channel.
  Actions OnAgentBytes(std::string_view data, Clock::time_point now);
  // A frame from a client (frames that are not requests are ignored).
  Actions OnClientRequest(ClientId client, uint32_t client_stream, uint8_t type, uint8_t flags,
                          const std::string& payload);
  // The client has gone: its pending calls are forgotten, and their late
  // replies dropped. Returns no action today.
  Actions OnClientGone(ClientId client);
  // Due timers: the sync retry and the mid-frame silence limit. Early or
  // extra calls are harmless.
  Actions OnTimer(Clock::time_point now);
  // The proxy stops: every pending call fails with UNAVAILABLE, and so does
  // every later one.
  Actions OnShutdown(const std::string& why);

  // When OnTimer is next due; nullopt: no timer is needed.
  std::optional<Clock::time_point> NextTimer() const;

  bool synced() const { return synced_; }
  bool quarantined() const { return quarantined_; }
  const std::string& quarantine_message() const { return quarantine_message_; }
  uint32_t sync_id() const { return sync_id_; }
  uint64_t syncs_sent() const { return syncs_sent_; }
  // Calls sent (or queued) to the agent and not answered yet.
  size_t pending() const { return routes_.size(); }
  size_t in_flight(ClientId client) const;

 private:
  struct Route {
    ClientId client;
    uint32_t client_stream;
  };
  struct ClientState {
    ttrpc::StreamIdRule stream_ids;
    size_t in_flight = 0;
  };

  void StartSession(Clock::time_point now, Actions* out);
  void SendSync(Clock::time_point now, Actions* out);
  void OnAgentFrame(ttrpc::DecodeEvent& ev, Actions* out);
  bool Issued(uint32_t id) const;
  void Reply(ClientId client, uint32_t stream, Code code, const std::string& message, Actions* out);
  // Fails every pending call with `code` (or `stream_code` for `stream`).
  void FailPending(Code code, const std::string& message, uint32_t stream, Code stream_code, Actions* out);
  void Resync(const std::string& why, Clock::time_point now, Actions* out);
  void Quarantine(const std::string& what, Actions* out, uint32_t stream = 0, Code code = Code::kDataLoss);

  AgentSessionOptions opt_;
  bool connected_ = false;
  bool stopped_ = false;
  std::string stop_message_;

  uint32_t sync_id_ = 0;
  uint32_t first_chan_id_ = 1;
  uint32_t next_chan_id_ = 1;
  bool chan_wrapped_ = false;
  bool synced_ = false;
  uint64_t syncs_sent_ = 0;
  uint64_t sync_replies_ = 0;
  Clock::time_point next_sync_at_{};
  std::optional<ttrpc::SyncScanner> scanner_;  // while not synced
  std::deque<std::string> presync_;
  size_t presync_bytes_ = 0;

  ttrpc::FrameDecoder decoder_;
  std::vector<ttrpc::DecodeEvent> events_;
  Clock::time_point last_rx_{};

  bool quarantined_ = false;
  std::string quarantine_message_;

  std::map<uint32_t, Route> routes_;  // channel stream id -> who asked
  std::map<ClientId, ClientState> clients_;
};

}  // namespace vmf
