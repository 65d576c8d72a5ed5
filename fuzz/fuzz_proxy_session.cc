// Fuzz target: the proxy's agent-channel state machine (AgentSession,
// src/proxy/agent_session.h) driven by a script of events.
//
// Input: byte 0 seeds the session's sync ids; the rest is a list of
// operations, each an opcode byte (taken modulo 8) and its arguments:
//   0 LEN BYTES...      the agent sends LEN bytes (raw: stale bytes, garbage,
//                       frames, pieces of frames)
//   1 C S LEN BYTES...  client C%4 sends a request on stream S with payload
//   2 T                 T*10 ms pass, then the timer fires
//   3 C                 client C%4 goes away
//   4                   the agent answers the current sync request
//   5 K B               the agent answers the K-th request it has seen,
//                       with status B%4 (0: OK), whole or (B&4) in two reads
//   6 K                 the agent sends an oversized header on that stream
//   7 C S               client C%4 sends a data frame (ignored)
// At the end the proxy shuts down.
//
// Invariants: the agent only ever gets request frames; every reply to a
// client is one well-formed response frame on a stream that client opened,
// to a live client, and at most one per accepted request (or the immediate
// refusal of that request); quarantine is final and stops all traffic; and
// after shutdown nothing is left pending.
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_util.h"
#include "health.pb.h"
#include "proxy/agent_session.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/wire.h"

namespace vmf {
namespace {

using Actions = AgentSession::Actions;

class Script {
 public:
  explicit Script(std::string_view s) : s_(s) {}
  bool done() const { return s_.empty(); }
  uint8_t Byte() {
    if (s_.empty()) return 0;
    uint8_t b = static_cast<uint8_t>(s_[0]);
    s_.remove_prefix(1);
    return b;
  }
  std::string_view Bytes(size_t n) {
    n = std::min(n, s_.size());
    std::string_view out = s_.substr(0, n);
    s_.remove_prefix(n);
    return out;
  }

 private:
  std::string_view s_;
};

class Driver {
 public:
  explicit Driver(uint8_t seed) : session_(Options(seed)) {}

  void Run(Script& script) {
    Check(session_.OnConnected(now_), kNoClient);
    while (!script.done()) {
      switch (script.Byte() % 8) {
        case 0: {
          uint8_t len = script.Byte();
          Agent(std::string(script.Bytes(len)));
          break;
        }
        case 1: {
          uint64_t c = script.Byte() % 4;
          uint32_t stream = script.Byte();
          uint8_t len = script.Byte() % 64;
          Request(c, stream, ttrpc::kTypeRequest, std::string(script.Bytes(len)));
          break;
        }
        case 2:
          now_ += std::chrono::milliseconds(10 * script.Byte());
          Check(session_.OnTimer(now_), kNoClient);
          break;
        case 3: {
          uint64_t c = script.Byte() % 4;
          Check(session_.OnClientGone(c), kNoClient);
          live_.erase(c);
          for (auto it = outstanding_.begin(); it != outstanding_.end();) {
            it = it->first == c ? outstanding_.erase(it) : std::next(it);
          }
          break;
        }
        case 4: {
          grpc::HealthCheckResponse ok;
          ok.set_status(grpc::HealthCheckResponse::SERVING);
          Agent(ttrpc::EncodeFrame(session_.sync_id(), ttrpc::kTypeResponse, 0,
                                   ttrpc::OkResponse(ok.SerializeAsString())));
          break;
        }
        case 5: {
          uint8_t k = script.Byte();
          uint8_t b = script.Byte();
          if (seen_.empty()) break;
          uint32_t id = seen_[k % seen_.size()];
          std::string payload = b % 4 == 0
                                    ? ttrpc::OkResponse("reply")
                                    : ttrpc::ErrorResponse(static_cast<Code>(b % 4 + 1), "agent error");
          std::string frame = ttrpc::EncodeFrame(id, ttrpc::kTypeResponse, 0, payload);
          if (b & 4) {
            Agent(frame.substr(0, frame.size() / 2));
            Agent(frame.substr(frame.size() / 2));
          } else {
            Agent(frame);
          }
          break;
        }
        case 6: {
          uint8_t k = script.Byte();
          uint32_t id = seen_.empty() ? 1 : seen_[k % seen_.size()];
          std::string header = ttrpc::EncodeFrame(id, ttrpc::kTypeResponse, 0, "");
          ttrpc::StoreBE32(header.data(), ttrpc::kMaxPayload + 1 + k);
          Agent(header);
          break;
        }
        case 7: {
          uint64_t c = script.Byte() % 4;
          Request(c, script.Byte(), ttrpc::kTypeData, "");
          break;
        }
      }
      FUZZ_CHECK(session_.sync_id() % 2 == 1 && session_.sync_id() < 0x40000000u);
      if (!session_.quarantined() && !session_.synced()) FUZZ_CHECK(session_.NextTimer().has_value());
      if (session_.quarantined()) FUZZ_CHECK(session_.pending() == 0 && !session_.NextTimer());
      FUZZ_CHECK(session_.pending() <= outstanding_.size());
    }
    Check(session_.OnShutdown("end of input"), kNoClient);
    FUZZ_CHECK(session_.pending() == 0);
    FUZZ_CHECK(outstanding_.empty());
  }

 private:
  static constexpr uint64_t kNoClient = ~uint64_t{0};

  static AgentSessionOptions Options(uint8_t seed) {
    AgentSessionOptions o;
    o.frame_timeout = std::chrono::milliseconds(500);
    uint32_t x = 0x9e3779b9u ^ seed;
    o.random = [x]() mutable {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      return x;
    };
    return o;
  }

  void Agent(const std::string& bytes) {
    const bool was_quarantined = session_.quarantined();
    Actions a = session_.OnAgentBytes(bytes, now_);
    if (was_quarantined) FUZZ_CHECK(a.empty());
    Check(a, kNoClient);
  }

  void Request(uint64_t c, uint32_t stream, uint8_t type, std::string payload) {
    const size_t sent_before = seen_.size();
    live_.insert(c);
    Actions a = session_.OnClientRequest(c, stream, type, 0, payload);
    if (type != ttrpc::kTypeRequest) FUZZ_CHECK(a.empty());
    bool refused = false;
    for (const auto& act : a) {
      if (auto* r = std::get_if<AgentSession::ReplyToClient>(&act)) {
        if (r->client == c && r->stream == stream) refused = true;
      }
    }
    Check(a, c, stream);
    if (type == ttrpc::kTypeRequest && !refused) {
      FUZZ_CHECK(outstanding_.insert({c, stream}).second);
    }
    if (session_.quarantined()) FUZZ_CHECK(seen_.size() == sent_before);
  }

  // Checks a batch of actions. A reply on (refusing_client, refusing_stream)
  // is the immediate refusal of the request being made; every other reply
  // must answer an outstanding request.
  void Check(const Actions& actions, uint64_t refusing_client, uint32_t refusing_stream = 0) {
    for (const auto& act : actions) {
      if (auto* s = std::get_if<AgentSession::SendToAgent>(&act)) {
        std::vector<ttrpc::DecodeEvent> ev;
        ttrpc::FrameDecoder d;
        d.Feed(s->bytes, &ev);
        FUZZ_CHECK(!d.mid_frame() && ev.size() == 1);
        FUZZ_CHECK(ev[0].kind == ttrpc::DecodeEvent::kFrame && ev[0].frame.type == ttrpc::kTypeRequest);
        FUZZ_CHECK(ev[0].frame.stream_id % 2 == 1);
        if (ev[0].frame.stream_id != session_.sync_id()) seen_.push_back(ev[0].frame.stream_id);
        if (seen_.size() > 4096) seen_.erase(seen_.begin(), seen_.begin() + 2048);
      } else if (auto* r = std::get_if<AgentSession::ReplyToClient>(&act)) {
        FUZZ_CHECK(live_.count(r->client) == 1);
        std::vector<ttrpc::DecodeEvent> ev;
        ttrpc::FrameDecoder d;
        d.Feed(r->frame, &ev);
        FUZZ_CHECK(!d.mid_frame() && ev.size() == 1);
        FUZZ_CHECK(ev[0].frame.stream_id == r->stream && ev[0].frame.type == ttrpc::kTypeResponse);
        ::ttrpc::Response resp;
        FUZZ_CHECK(resp.ParseFromString(ev[0].frame.payload));
        if (r->client == refusing_client && r->stream == refusing_stream) continue;
        FUZZ_CHECK(outstanding_.erase({r->client, r->stream}) == 1);
      } else {
        const auto& n = std::get<AgentSession::Notice>(act);
        FUZZ_CHECK(!n.message.empty());
      }
    }
  }

  AgentSession session_;
  Clock::time_point now_ = Clock::time_point() + std::chrono::hours(1);
  std::set<uint64_t> live_;
  std::set<std::pair<uint64_t, uint32_t>> outstanding_;  // accepted requests not answered yet
  std::vector<uint32_t> seen_;                           // channel ids the agent was sent
};

}  // namespace
}  // namespace vmf

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto input = vmf::fuzz::SplitSeed(data, size);
  if (!input) return 0;
  vmf::Script script(input->stream);
  vmf::Driver(input->seed).Run(script);
  return 0;
}
