// Fuzz target: the host's ttrpc frame reader and its decoding of agent replies.
//
// Input: byte 0 picks how the stream arrives in pieces (fuzz_util.h Chunks);
// the rest is the byte stream a ttrpc peer sends (what the host's Client
// reads from the proxy socket).
//
// 1. FrameDecoder (src/ttrpc/frame.h) gets the stream whole and in pieces:
//    both must give the same events, nothing above the 4 MiB limit is ever
//    buffered, and every frame re-encodes (EncodeFrame) to the same frame.
// 2. Every frame is decoded as the host decodes a reply: ttrpc.Response, its
//    status through StatusFromWire (src/ttrpc/client.cc), then the payload as
//    each reply message AgentClient parses (src/vm/agent_client.cc) and as the
//    daemon client's replies (src/daemon/client.cc). Client::ReadLoop needs a
//    socket and a pending call; its decoding is DecodeResponse, called here.
#include <cstdint>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "factory.pb.h"
#include "fuzz_util.h"
#include "health.pb.h"
#include "ttrpc.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"

namespace {

using namespace vmf;
using namespace vmf::ttrpc;

bool SameEvent(const DecodeEvent& a, const DecodeEvent& b) {
  return a.kind == b.kind && a.declared_length == b.declared_length &&
         a.frame.stream_id == b.frame.stream_id && a.frame.type == b.frame.type &&
         a.frame.flags == b.frame.flags && a.frame.payload == b.frame.payload;
}

// Parses a reply payload as `Msg`; a parsed message must survive a round trip.
template <typename Msg>
bool Parse(const std::string& payload, Msg* msg) {
  if (!msg->ParseFromString(payload)) return false;
  std::string once = msg->SerializeAsString();
  Msg again;
  FUZZ_CHECK(again.ParseFromString(once));
  FUZZ_CHECK(again.SerializeAsString() == once);
  return true;
}

// What AgentClient and the daemon client do with a reply's payload.
void DecodeReplyPayload(const std::string& payload) {
  grpc::HealthCheckResponse health;
  if (Parse(payload, &health)) (void)(health.status() == grpc::HealthCheckResponse::SERVING);
  grpc::VersionCheckResponse version;
  if (Parse(payload, &version)) (void)version.agent_version().size();
  grpc::WaitProcessResponse wait;
  if (Parse(payload, &wait)) (void)wait.status();
  grpc::WriteStreamResponse write;
  if (Parse(payload, &write)) (void)write.len();
  grpc::ReadStreamResponse read;
  if (Parse(payload, &read)) (void)read.data().empty();  // empty data: end of stream
  grpc::GuestDetailsResponse details;
  if (Parse(payload, &details)) {
    (void)details.mem_block_size_bytes();
    (void)details.agent_details().version();
  }
  grpc::Empty empty;
  (void)Parse(payload, &empty);
  vmfactory::v1::VM vm;
  (void)Parse(payload, &vm);
  vmfactory::v1::StatusResponse status;
  if (Parse(payload, &status)) {
    for (const auto& e : status.ready()) (void)e.id();
    for (const auto& h : status.handed_out()) (void)h.owner_pid();
  }
  vmfactory::v1::ConfigResponse config;
  (void)Parse(payload, &config);
}

// Client::ReadLoop's decoding of one frame that answers a pending call.
void DecodeResponseFrame(const DecodeEvent& ev) {
  Result<std::string> reply = DecodeResponse(ev);
  if (reply.ok()) {
    DecodeReplyPayload(*reply);
    return;
  }
  const Status& st = reply.status();
  FUZZ_CHECK(static_cast<int>(st.code()) >= 1 && static_cast<int>(st.code()) <= 16);
  FUZZ_CHECK(st.message().size() <= 1024 + 3);  // bounded: it may come from the guest
  (void)st.ToString();
  (void)st.WithContext("grpc.AgentService/ReadStdout").ToString();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto input = vmf::fuzz::SplitSeed(data, size);
  if (!input) return 0;
  const uint8_t seed = input->seed;
  const std::string_view stream = input->stream;

  FrameDecoder whole;
  std::vector<DecodeEvent> a;
  whole.Feed(stream, &a);

  FrameDecoder pieces;
  std::vector<DecodeEvent> b;
  for (std::string_view piece : vmf::fuzz::Chunks(stream, seed)) {
    pieces.Feed(piece, &b);
    FUZZ_CHECK(pieces.buffered() <= kHeaderSize + kMaxPayload);
  }
  FUZZ_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) FUZZ_CHECK(SameEvent(a[i], b[i]));
  FUZZ_CHECK(whole.buffered() == pieces.buffered());
  FUZZ_CHECK(whole.mid_frame() == pieces.mid_frame());

  for (const DecodeEvent& ev : a) {
    if (ev.kind == DecodeEvent::kOversized) {
      FUZZ_CHECK(ev.declared_length > kMaxPayload);
      FUZZ_CHECK(ev.frame.payload.empty());
      FUZZ_CHECK(DecodeResponse(ev).status().code() == Code::kResourceExhausted);
      continue;
    }
    FUZZ_CHECK(ev.frame.payload.size() <= kMaxPayload);
    // Encoding a decoded frame and decoding it again gives the same frame.
    std::string wire = EncodeFrame(ev.frame.stream_id, ev.frame.type, ev.frame.flags, ev.frame.payload);
    FUZZ_CHECK(wire.size() == kHeaderSize + ev.frame.payload.size());
    FrameDecoder again;
    std::vector<DecodeEvent> c;
    again.Feed(wire, &c);
    FUZZ_CHECK(c.size() == 1 && SameEvent(c[0], ev) && !again.mid_frame());

    // The client only decodes responses; decode every frame anyway (the
    // type byte is as untrusted as the rest).
    DecodeResponseFrame(ev);
  }

  // After a Reset the decoder starts clean: a valid frame decodes at once.
  pieces.Reset();
  FUZZ_CHECK(!pieces.mid_frame() && pieces.buffered() == 0);
  std::vector<DecodeEvent> d;
  pieces.Feed(EncodeFrame(1, kTypeResponse, 0, ""), &d);
  FUZZ_CHECK(d.size() == 1 && d[0].kind == DecodeEvent::kFrame && d[0].frame.stream_id == 1);
  return 0;
}
