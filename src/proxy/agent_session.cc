#include "proxy/agent_session.h"

#include <algorithm>
#include <random>
#include <utility>

#include "ttrpc.pb.h"

namespace vmf {

using ttrpc::DecodeEvent;
using ttrpc::EncodeFrame;
using ttrpc::ErrorResponse;

AgentSession::AgentSession(AgentSessionOptions options) : opt_(std::move(options)) {
  if (!opt_.random) {
    opt_.random = [] {
      std::random_device rd;
      return static_cast<uint32_t>(rd());
    };
  }
}

size_t AgentSession::in_flight(ClientId client) const {
  auto it = clients_.find(client);
  return it == clients_.end() ? 0 : it->second.in_flight;
}

AgentSession::Actions AgentSession::OnConnected(Clock::time_point now) {
  Actions out;
  if (stopped_ || quarantined_) return out;
  connected_ = true;
  last_rx_ = now;
  StartSession(now, &out);
  return out;
}

// A new session on the channel: a fresh random sync id, and every byte until
// its reply is stale.
void AgentSession::StartSession(Clock::time_point now, Actions* out) {
  uint32_t id = 0;
  do {
    id = (opt_.random() % 0x3fffffffu) | 1u;
  } while (id == sync_id_);
  sync_id_ = id;
  next_chan_id_ = sync_id_ + 2;
  first_chan_id_ = next_chan_id_;
  chan_wrapped_ = false;
  synced_ = false;
  syncs_sent_ = 0;
  sync_replies_ = 0;
  scanner_.emplace(sync_id_);
  decoder_ = ttrpc::FrameDecoder();  // frees a partial frame of up to 4 MiB
  SendSync(now, out);
}

void AgentSession::SendSync(Clock::time_point now, Actions* out) {
  if (synced_ || stopped_ || quarantined_) return;
  out->push_back(SendToAgent{ttrpc::SyncRequestFrame(sync_id_)});
  ++syncs_sent_;
  next_sync_at_ = now + opt_.sync_retry;
}

AgentSession::Actions AgentSession::OnAgentBytes(std::string_view data, Clock::time_point now) {
  Actions out;
  if (stopped_ || quarantined_) return out;
  last_rx_ = now;
  if (!synced_) {
    // Before the sync reply, bytes are stale: decoding starts at the header
    // of a response on the sync stream.
    std::optional<std::string_view> from_sync = scanner_->Feed(data);
    if (!from_sync) {
      if (scanner_->skipped() > kMaxPresyncBytes) {
        Quarantine("the agent sent " + std::to_string(scanner_->skipped()) +
                       " bytes without answering the sync request (garbage, or not a vmfactory agent)",
                   &out);
      }
      return out;
    }
    synced_ = true;
    out.push_back(Notice{Notice::kSynced, "agent channel synchronised (skipped " +
                                              std::to_string(scanner_->skipped()) + " stale bytes)"});
    for (auto& f : presync_) out.push_back(SendToAgent{std::move(f)});
    presync_.clear();
    presync_bytes_ = 0;
    events_.clear();
    decoder_.Feed(*from_sync, &events_);
    scanner_.reset();  // what it handed over has been decoded
  } else {
    events_.clear();
    decoder_.Feed(data, &events_);
  }
  for (auto& ev : events_) {
    OnAgentFrame(ev, &out);
    if (quarantined_) break;
  }
  events_.clear();
  return out;
}

// Whether this session ever sent a request with this channel stream id.
bool AgentSession::Issued(uint32_t id) const {
  if (id % 2 == 0) return false;
  if (chan_wrapped_) return id >= first_chan_id_ || id < next_chan_id_;
  return id >= first_chan_id_ && id < next_chan_id_;
}

// Every frame from the agent must be a well-formed response for a stream this
// proxy opened: anything else is a protocol violation, which quarantines the
// channel (the stream can no longer be trusted).
void AgentSession::OnAgentFrame(DecodeEvent& ev, Actions* out) {
  const uint32_t id = ev.frame.stream_id;
  const std::string on_stream = " on stream " + std::to_string(id);
  if (ev.kind == DecodeEvent::kOversized) {
    Quarantine("a reply of " + std::to_string(ev.declared_length) + " bytes" + on_stream +
                   " exceeds the 4 MiB ttrpc limit",
               out, id, Code::kResourceExhausted);
    return;
  }
  if (ev.frame.type != ttrpc::kTypeResponse) {
    Quarantine("a frame of type " + std::to_string(ev.frame.type) + on_stream +
                   " (the agent may only send responses)",
               out);
    return;
  }
  ::ttrpc::Response resp;
  if (!resp.ParseFromString(ev.frame.payload)) {
    Quarantine("the reply" + on_stream + " is not a ttrpc.Response (" +
                   std::to_string(ev.frame.payload.size()) + " bytes of garbage)",
               out, id);
    return;
  }
  if (id == sync_id_) {  // the sync reply, and replies to its retries
    if (++sync_replies_ > syncs_sent_) {
      Quarantine(
          std::to_string(sync_replies_) + " replies to " + std::to_string(syncs_sent_) + " sync requests",
          out);
    }
    return;
  }
  auto it = routes_.find(id);
  if (it == routes_.end()) {
    if (!Issued(id)) {
      Quarantine("a reply for stream " + std::to_string(id) + ", which was never opened", out);
      return;
    }
    out->push_back(Notice{Notice::kLateReplyDropped, "dropping a late reply for stream " +
                                                         std::to_string(id) + " (its client is gone)"});
    return;
  }
  const Route route = it->second;
  routes_.erase(it);
  auto c = clients_.find(route.client);
  if (c != clients_.end()) c->second.in_flight--;
  out->push_back(
      ReplyToClient{route.client, route.client_stream,
                    EncodeFrame(route.client_stream, ev.frame.type, ev.frame.flags, ev.frame.payload)});
}

AgentSession::Actions AgentSession::OnClientRequest(ClientId client, uint32_t client_stream, uint8_t type,
                                                    uint8_t flags, const std::string& payload) {
  Actions out;
  if (type != ttrpc::kTypeRequest) return out;  // unary only: data frames are not routed
  ClientState& c = clients_[client];
  if (!c.stream_ids.Accept(client_stream)) {
    Reply(client, client_stream, Code::kInvalidArgument,
          "stream id " + std::to_string(client_stream) + " must be odd and increasing", &out);
    return out;
  }
  if (c.in_flight >= kMaxPendingPerClient) {
    Reply(client, client_stream, Code::kResourceExhausted, "too many requests in flight", &out);
    return out;
  }
  if (stopped_) {
    Reply(client, client_stream, Code::kUnavailable, stop_message_, &out);
    return out;
  }
  if (quarantined_) {
    Reply(client, client_stream, Code::kDataLoss, quarantine_message_, &out);
    return out;
  }
  // The id is used up even if the request is refused below.
  const uint32_t chan = next_chan_id_;
  next_chan_id_ += 2;
  if (next_chan_id_ >= opt_.wrap_at) {
    next_chan_id_ = 1;  // the agent accepts a new sync baseline
    chan_wrapped_ = true;
  }
  std::string frame = EncodeFrame(chan, type, flags, payload);
  if (synced_) {
    out.push_back(SendToAgent{std::move(frame)});
  } else if (presync_bytes_ + frame.size() > kMaxPresyncQueue) {
    Reply(client, client_stream, Code::kResourceExhausted,
          "too many requests queued before the agent answered", &out);
    return out;
  } else {
    presync_bytes_ += frame.size();
    presync_.push_back(std::move(frame));
  }
  routes_[chan] = Route{client, client_stream};
  c.in_flight++;
  return out;
}

AgentSession::Actions AgentSession::OnClientGone(ClientId client) {
  for (auto it = routes_.begin(); it != routes_.end();) {
    if (it->second.client == client) {
      it = routes_.erase(it);
    } else {
      ++it;
    }
  }
  clients_.erase(client);
  return {};
}

std::optional<Clock::time_point> AgentSession::NextTimer() const {
  if (stopped_ || quarantined_ || !connected_) return std::nullopt;
  if (!synced_) return next_sync_at_;
  if (decoder_.mid_frame()) return last_rx_ + opt_.frame_timeout;
  return std::nullopt;
}

AgentSession::Actions AgentSession::OnTimer(Clock::time_point now) {
  Actions out;
  if (stopped_ || quarantined_ || !connected_) return out;
  if (!synced_) {
    if (now >= next_sync_at_) SendSync(now, &out);
    return out;
  }
  // A frame begun and not finished: the agent may not fall silent in it.
  if (decoder_.mid_frame() && now - last_rx_ >= opt_.frame_timeout) {
    auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_rx_);
    Resync("the agent sent " + std::to_string(decoder_.buffered()) +
               " bytes of a frame and then nothing for " + std::to_string(silent.count()) + " ms",
           now, &out);
  }
  return out;
}

AgentSession::Actions AgentSession::OnShutdown(const std::string& why) {
  Actions out;
  if (stopped_) return out;
  stopped_ = true;
  stop_message_ = "agent unavailable: " + why;
  FailPending(Code::kUnavailable, stop_message_, 0, Code::kUnavailable, &out);
  presync_.clear();
  presync_bytes_ = 0;
  return out;
}

void AgentSession::Reply(ClientId client, uint32_t stream, Code code, const std::string& message,
                         Actions* out) {
  out->push_back(ReplyToClient{client, stream,
                               EncodeFrame(stream, ttrpc::kTypeResponse, 0, ErrorResponse(code, message))});
}

void AgentSession::FailPending(Code code, const std::string& message, uint32_t stream, Code stream_code,
                               Actions* out) {
  for (auto& [chan, route] : routes_) {
    auto c = clients_.find(route.client);
    if (c != clients_.end()) c->second.in_flight--;
    Reply(route.client, route.client_stream, chan == stream ? stream_code : code, message, out);
  }
  routes_.clear();
}

// A stalled frame is not proof of malice: the VM may be paused, or QEMU
// starved of CPU, in the middle of a reply. The pending calls fail
// (UNAVAILABLE: a retry may work), the partial frame is dropped, and a new
// session starts; if the guest goes on, the rest of that frame is skipped as
// stale, and the agent drops the replies it still owed.
void AgentSession::Resync(const std::string& why, Clock::time_point now, Actions* out) {
  const std::string message = why + "; the agent channel was resynchronised: retry the call";
  out->push_back(
      Notice{Notice::kResynced, message + " (" + std::to_string(routes_.size()) + " calls failed)"});
  FailPending(Code::kUnavailable, message, 0, Code::kUnavailable, out);
  StartSession(now, out);
}

// Fails every pending call (the offending stream with `code`, the others with
// DATA_LOSS) and every later one; the agent is not listened to any more.
void AgentSession::Quarantine(const std::string& what, Actions* out, uint32_t stream, Code code) {
  if (quarantined_ || stopped_) return;
  quarantined_ = true;
  quarantine_message_ = "agent protocol violation: " + what + "; the VM's agent channel is quarantined";
  out->push_back(Notice{Notice::kQuarantined, quarantine_message_ + ": every call fails from now on"});
  FailPending(Code::kDataLoss, quarantine_message_, stream, code, out);
  presync_.clear();
  presync_bytes_ = 0;
  scanner_.reset();
  decoder_ = ttrpc::FrameDecoder();  // frees a partial frame of up to 4 MiB
}

}  // namespace vmf
