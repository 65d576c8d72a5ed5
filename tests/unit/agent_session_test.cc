// AgentSession (the proxy's agent-channel state machine) without sockets,
// threads or clocks, plus the ttrpc wire and sync helpers it is built on.
#include "proxy/agent_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "health.pb.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/sync.h"
#include "ttrpc/wire.h"

namespace vmf {
namespace {

using ttrpc::DecodeEvent;
using ttrpc::EncodeFrame;
using ttrpc::kTypeRequest;
using ttrpc::kTypeResponse;
using Actions = AgentSession::Actions;

const Clock::time_point t0 = Clock::time_point() + std::chrono::hours(1);

Clock::time_point At(int ms) { return t0 + std::chrono::milliseconds(ms); }

std::vector<ttrpc::Frame> Decode(const std::string& bytes) {
  ttrpc::FrameDecoder d;
  std::vector<DecodeEvent> ev;
  d.Feed(bytes, &ev);
  EXPECT_FALSE(d.mid_frame());
  std::vector<ttrpc::Frame> out;
  out.reserve(ev.size());
  for (auto& e : ev) out.push_back(std::move(e.frame));
  return out;
}

// Every frame the actions send to the agent.
std::vector<ttrpc::Frame> ToAgent(const Actions& actions) {
  std::string all;
  for (const auto& a : actions)
    if (auto* s = std::get_if<AgentSession::SendToAgent>(&a)) all += s->bytes;
  return Decode(all);
}

struct Reply {
  uint64_t client;
  uint32_t stream;
  int code;  // 0: OK
  std::string message_or_payload;
};

std::vector<Reply> ToClients(const Actions& actions) {
  std::vector<Reply> out;
  for (const auto& a : actions) {
    auto* r = std::get_if<AgentSession::ReplyToClient>(&a);
    if (!r) continue;
    auto frames = Decode(r->frame);
    EXPECT_EQ(frames.size(), 1u);
    if (frames.empty()) continue;
    EXPECT_EQ(frames[0].stream_id, r->stream);
    EXPECT_EQ(frames[0].type, kTypeResponse);
    ::ttrpc::Response resp;
    EXPECT_TRUE(resp.ParseFromString(frames[0].payload));
    out.push_back(Reply{r->client, r->stream, resp.status().code(),
                        resp.status().code() != 0 ? resp.status().message() : resp.payload()});
  }
  return out;
}

bool HasNotice(const Actions& actions, AgentSession::Notice::Kind kind) {
  for (const auto& a : actions) {
    auto* n = std::get_if<AgentSession::Notice>(&a);
    if (n && n->kind == kind) return true;
  }
  return false;
}

std::string SyncReply(uint32_t id) {
  grpc::HealthCheckResponse ok;
  ok.set_status(grpc::HealthCheckResponse::SERVING);
  return EncodeFrame(id, kTypeResponse, 0, ttrpc::OkResponse(ok.SerializeAsString()));
}

std::string Answer(uint32_t id, const std::string& payload) {
  return EncodeFrame(id, kTypeResponse, 0, ttrpc::OkResponse(payload));
}

// A session whose sync ids come from a fixed list (then 41, 43, ...).
class AgentSessionTest : public ::testing::Test {
 protected:
  AgentSessionOptions Options() {
    AgentSessionOptions o;
    o.frame_timeout = std::chrono::milliseconds(300);
    o.random = [this] { return next_random_ += 2; };
    return o;
  }
  // Connects and answers the sync: returns the sync id.
  uint32_t Synced(AgentSession& s) {
    Actions a = s.OnConnected(At(0));
    auto sent = ToAgent(a);
    EXPECT_EQ(sent.size(), 1u);
    uint32_t id = s.sync_id();
    Actions b = s.OnAgentBytes(SyncReply(id), At(1));
    EXPECT_TRUE(s.synced());
    EXPECT_TRUE(HasNotice(b, AgentSession::Notice::kSynced));
    return id;
  }
  // Sends a request from `client`; returns the channel stream id it went out on.
  uint32_t Call(AgentSession& s, uint64_t client, uint32_t stream, const std::string& payload = "req") {
    auto sent = ToAgent(s.OnClientRequest(client, stream, kTypeRequest, 0, payload));
    EXPECT_EQ(sent.size(), 1u);
    return sent.empty() ? 0 : sent[0].stream_id;
  }
  uint32_t next_random_ = 39;
};

// ----------------------------------------------------------- wire helpers

TEST(WireTest, ErrorAndOkResponsesRoundTrip) {
  ::ttrpc::Response r;
  ASSERT_TRUE(r.ParseFromString(ttrpc::ErrorResponse(Code::kNotFound, "no such VM")));
  EXPECT_EQ(r.status().code(), static_cast<int>(Code::kNotFound));
  EXPECT_EQ(r.status().message(), "no such VM");
  EXPECT_TRUE(r.payload().empty());
  ASSERT_TRUE(r.ParseFromString(ttrpc::OkResponse("abc")));
  EXPECT_EQ(r.status().code(), 0);
  EXPECT_EQ(r.payload(), "abc");
  EXPECT_EQ(ttrpc::ErrorResponseProto(Code::kInternal, "x").SerializeAsString(),
            ttrpc::ErrorResponse(Code::kInternal, "x"));
}

TEST(WireTest, BigEndianWords) {
  char b[4];
  ttrpc::StoreBE32(b, 0x01a2b3f4u);
  EXPECT_EQ(std::string(b, 4), std::string("\x01\xa2\xb3\xf4", 4));
  EXPECT_EQ(ttrpc::LoadBE32(b), 0x01a2b3f4u);
  ttrpc::StoreBE32(b, 0xffffffffu);
  EXPECT_EQ(ttrpc::LoadBE32(b), 0xffffffffu);
  // The frame header uses the same words.
  std::string f = EncodeFrame(0x01020304u, kTypeRequest, 0, "xyz");
  EXPECT_EQ(ttrpc::LoadBE32(f.data()), 3u);
  EXPECT_EQ(ttrpc::LoadBE32(f.data() + 4), 0x01020304u);
}

TEST(WireTest, StreamIdRuleWantsOddAndIncreasing) {
  ttrpc::StreamIdRule ids;
  EXPECT_FALSE(ids.Accept(0));
  EXPECT_FALSE(ids.Accept(2));
  EXPECT_TRUE(ids.Accept(1));
  EXPECT_FALSE(ids.Accept(1));
  EXPECT_TRUE(ids.Accept(7));
  EXPECT_FALSE(ids.Allows(5));
  EXPECT_TRUE(ids.Allows(9));
  EXPECT_EQ(ids.last(), 7u);  // Allows records nothing
  EXPECT_FALSE(ids.Accept(8));
  ids.Restart(3);  // a resync's new baseline may be lower
  EXPECT_TRUE(ids.Accept(5));
  EXPECT_TRUE(ids.Accept(0xffffffffu));
  EXPECT_FALSE(ids.Accept(0xffffffffu));
  EXPECT_EQ(ttrpc::StreamIdRule(11).last(), 11u);
}

// ------------------------------------------------------------------ sync

TEST(SyncTest, SyncRequestIsRecognised) {
  auto frames = Decode(ttrpc::SyncRequestFrame(77));
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].stream_id, 77u);
  EXPECT_EQ(frames[0].type, kTypeRequest);
  ::ttrpc::Request req;
  ASSERT_TRUE(req.ParseFromString(frames[0].payload));
  EXPECT_TRUE(ttrpc::IsSyncRequest(req));
  EXPECT_EQ(req.metadata(0).key(), "vmf-sync");
  EXPECT_EQ(req.metadata(0).value(), "77");
  req.set_method("Watch");
  EXPECT_FALSE(ttrpc::IsSyncRequest(req));
  req.set_method("Check");
  req.mutable_metadata(0)->set_key("other");
  EXPECT_FALSE(ttrpc::IsSyncRequest(req));
}

TEST(SyncTest, ScannerFindsAHeaderSplitAcrossFeeds) {
  const std::string reply = SyncReply(5);
  ttrpc::SyncScanner scan(5);
  EXPECT_FALSE(scan.Feed(reply.substr(0, 3)));
  EXPECT_FALSE(scan.Feed(reply.substr(3, 4)));
  auto from = scan.Feed(reply.substr(7));
  ASSERT_TRUE(from);
  EXPECT_EQ(*from, reply);
  EXPECT_TRUE(scan.found());
  EXPECT_EQ(scan.skipped(), 0u);
  // After the header, feeds pass through as they are.
  auto next = scan.Feed("more");
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, "more");
}

TEST(SyncTest, ScannerSkipsGarbageAndCountsIt) {
  ttrpc::SyncScanner scan(9);
  // Garbage, a reply for another stream, a request on the sync stream, and a
  // header on the sync stream announcing more than a sync reply can be.
  std::string stale = std::string(100, '\x07') + Answer(7, "old") + EncodeFrame(9, kTypeRequest, 0, "x");
  std::string big = EncodeFrame(9, kTypeResponse, 0, std::string(ttrpc::kMaxSyncReplyLength + 1, 'y'));
  EXPECT_FALSE(scan.Feed(stale));
  EXPECT_FALSE(scan.Feed(big));
  EXPECT_FALSE(scan.found());
  // It keeps at most a header minus one byte between feeds.
  EXPECT_EQ(scan.skipped(), stale.size() + big.size() - (ttrpc::kHeaderSize - 1));
  const std::string reply = SyncReply(9);
  auto from = scan.Feed("junk" + reply + "tail");
  ASSERT_TRUE(from);
  EXPECT_EQ(*from, reply + "tail");
  EXPECT_EQ(scan.skipped(), stale.size() + big.size() + 4);
}

// --------------------------------------------------------- AgentSession

TEST_F(AgentSessionTest, ConnectSendsASyncRequestOnTheInjectedOddId) {
  AgentSession s(Options());
  EXPECT_FALSE(s.NextTimer());
  auto sent = ToAgent(s.OnConnected(At(0)));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].stream_id, 41u);
  EXPECT_EQ(s.sync_id(), 41u);
  ::ttrpc::Request req;
  ASSERT_TRUE(req.ParseFromString(sent[0].payload));
  EXPECT_TRUE(ttrpc::IsSyncRequest(req));
  EXPECT_FALSE(s.synced());

  // The id is odd even when the generator's number is not.
  AgentSessionOptions o = Options();
  o.random = [] { return 1000u; };
  AgentSession even(o);
  (void)even.OnConnected(At(0));
  EXPECT_EQ(even.sync_id(), 1001u);
}

TEST_F(AgentSessionTest, SyncIsRetriedEveryOneAndAHalfSeconds) {
  AgentSession s(Options());
  (void)s.OnConnected(At(0));
  ASSERT_TRUE(s.NextTimer());
  EXPECT_EQ(*s.NextTimer(), At(1500));
  EXPECT_TRUE(s.OnTimer(At(1499)).empty());  // early: nothing
  auto sent = ToAgent(s.OnTimer(At(1500)));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].stream_id, 41u);  // the same id
  EXPECT_EQ(s.syncs_sent(), 2u);
  EXPECT_EQ(*s.NextTimer(), At(3000));
  // Both sync replies are owed; a third is a violation.
  (void)s.OnAgentBytes(SyncReply(41), At(3001));
  EXPECT_TRUE(s.synced());
  EXPECT_FALSE(s.NextTimer());  // synced, no partial frame
  Actions a = s.OnAgentBytes(SyncReply(41), At(3002));
  EXPECT_FALSE(s.quarantined());
  a = s.OnAgentBytes(SyncReply(41), At(3003));
  EXPECT_TRUE(s.quarantined());
  EXPECT_TRUE(HasNotice(a, AgentSession::Notice::kQuarantined));
  EXPECT_NE(s.quarantine_message().find("3 replies to 2 sync requests"), std::string::npos);
}

TEST_F(AgentSessionTest, StaleBytesAreSkippedAndEarlyRequestsWaitForTheSync) {
  AgentSession s(Options());
  (void)s.OnConnected(At(0));
  // Requests before the sync reply are queued, not sent.
  EXPECT_TRUE(ToAgent(s.OnClientRequest(1, 1, kTypeRequest, 0, "a")).empty());
  EXPECT_TRUE(ToAgent(s.OnClientRequest(2, 5, kTypeRequest, 0, "b")).empty());
  EXPECT_EQ(s.pending(), 2u);
  // Stale bytes: half a frame, garbage and a whole reply for an old stream,
  // then the sync reply and a reply already, all in one read.
  std::string stale = std::string("\x00\x00\x00\x40\x00\x00", 6) + "garbage" + Answer(99, "old");
  Actions a = s.OnAgentBytes(stale + SyncReply(41), At(1));
  ASSERT_TRUE(s.synced());
  auto sent = ToAgent(a);
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].stream_id, 43u);
  EXPECT_EQ(sent[0].payload, "a");
  EXPECT_EQ(sent[1].stream_id, 45u);
  EXPECT_EQ(sent[1].payload, "b");
  // Replies go to the client that asked, on its own stream, in any order.
  auto r = ToClients(s.OnAgentBytes(Answer(45, "for b") + Answer(43, "for a"), At(2)));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].client, 2u);
  EXPECT_EQ(r[0].stream, 5u);
  EXPECT_EQ(r[0].message_or_payload, "for b");
  EXPECT_EQ(r[1].client, 1u);
  EXPECT_EQ(r[1].stream, 1u);
  EXPECT_EQ(r[1].message_or_payload, "for a");
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(s.in_flight(1), 0u);
}

TEST_F(AgentSessionTest, AgentErrorsPassThroughAndRepliesMayArriveInPieces) {
  AgentSession s(Options());
  Synced(s);
  uint32_t chan = Call(s, 1, 1);
  EXPECT_EQ(s.in_flight(1), 1u);
  std::string reply =
      EncodeFrame(chan, kTypeResponse, 0, ttrpc::ErrorResponse(Code::kNotFound, "no process"));
  EXPECT_TRUE(ToClients(s.OnAgentBytes(reply.substr(0, 4), At(10))).empty());
  EXPECT_EQ(*s.NextTimer(), At(310));  // mid-frame: the silence limit runs
  auto r = ToClients(s.OnAgentBytes(reply.substr(4), At(20)));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kNotFound));
  EXPECT_EQ(r[0].message_or_payload, "no process");
  EXPECT_FALSE(s.NextTimer());
}

TEST_F(AgentSessionTest, PresyncQueueIsBoundedAt64MiB) {
  AgentSession s(Options());
  (void)s.OnConnected(At(0));
  const std::string big(ttrpc::kMaxPayload - 64, 'p');
  uint32_t stream = 1;
  size_t queued = 0;
  std::vector<Reply> refused;
  while (refused.empty()) {
    refused = ToClients(s.OnClientRequest(1, stream, kTypeRequest, 0, big));
    stream += 2;
    if (refused.empty()) ++queued;
    ASSERT_LT(queued, 20u);
  }
  EXPECT_EQ(queued, AgentSession::kMaxPresyncQueue / (big.size() + ttrpc::kHeaderSize));
  EXPECT_EQ(refused[0].code, static_cast<int>(Code::kResourceExhausted));
  EXPECT_NE(refused[0].message_or_payload.find("queued before the agent answered"), std::string::npos);
  EXPECT_EQ(s.pending(), queued);
  // The sync reply sends the queue.
  EXPECT_EQ(ToAgent(s.OnAgentBytes(SyncReply(41), At(1))).size(), queued);
}

TEST_F(AgentSessionTest, EightMiBOfPresyncGarbageQuarantines) {
  AgentSession s(Options());
  (void)s.OnConnected(At(0));
  (void)s.OnClientRequest(1, 1, kTypeRequest, 0, "queued");
  const std::string junk(1 << 20, '\x01');
  Actions a;
  for (int i = 0; i < 8; ++i) {
    a = s.OnAgentBytes(junk, At(i));
    ASSERT_FALSE(s.quarantined()) << i;
  }
  a = s.OnAgentBytes(junk, At(9));
  ASSERT_TRUE(s.quarantined());
  EXPECT_NE(s.quarantine_message().find("without answering the sync request"), std::string::npos);
  auto r = ToClients(a);
  ASSERT_EQ(r.size(), 1u);  // the queued call fails at once
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kDataLoss));
  EXPECT_FALSE(s.NextTimer());  // no more sync retries
  // Every later call fails at once, and the agent is no longer heard.
  r = ToClients(s.OnClientRequest(1, 3, kTypeRequest, 0, "later"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kDataLoss));
  EXPECT_NE(r[0].message_or_payload.find("quarantined"), std::string::npos);
  EXPECT_TRUE(s.OnAgentBytes(SyncReply(41), At(10)).empty());
  EXPECT_TRUE(s.OnTimer(At(100000)).empty());
}

TEST_F(AgentSessionTest, OversizedReplyFailsThatCallWithResourceExhaustedAndOthersWithDataLoss) {
  AgentSession s(Options());
  Synced(s);
  uint32_t a = Call(s, 1, 1);
  Call(s, 2, 1);
  std::string header = EncodeFrame(a, kTypeResponse, 0, "");
  ttrpc::StoreBE32(header.data(), ttrpc::kMaxPayload + 1);
  auto r = ToClients(s.OnAgentBytes(header, At(5)));
  ASSERT_TRUE(s.quarantined());
  ASSERT_EQ(r.size(), 2u);
  for (const Reply& x : r) {
    EXPECT_EQ(x.code, static_cast<int>(x.client == 1 ? Code::kResourceExhausted : Code::kDataLoss))
        << x.client;
    EXPECT_NE(x.message_or_payload.find("exceeds the 4 MiB ttrpc limit"), std::string::npos);
  }
  EXPECT_EQ(s.pending(), 0u);
}

TEST_F(AgentSessionTest, ReplyForAStreamNeverOpenedQuarantines) {
  AgentSession s(Options());
  uint32_t sync = Synced(s);
  Call(s, 1, 1);
  (void)s.OnAgentBytes(Answer(sync + 4, "unasked"), At(5));  // sync+2 was issued, sync+4 not
  EXPECT_TRUE(s.quarantined());
  EXPECT_NE(s.quarantine_message().find("which was never opened"), std::string::npos);
}

TEST_F(AgentSessionTest, RequestFramesAndGarbagePayloadsFromTheAgentQuarantine) {
  {
    AgentSession s(Options());
    Synced(s);
    uint32_t chan = Call(s, 1, 1);
    (void)s.OnAgentBytes(EncodeFrame(chan, kTypeRequest, 0, ""), At(5));
    EXPECT_TRUE(s.quarantined());
    EXPECT_NE(s.quarantine_message().find("may only send responses"), std::string::npos);
  }
  {
    AgentSession s(Options());
    Synced(s);
    uint32_t chan = Call(s, 1, 1);
    auto r = ToClients(s.OnAgentBytes(EncodeFrame(chan, kTypeResponse, 0, "\xff\xff\xff"), At(5)));
    EXPECT_TRUE(s.quarantined());
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].code, static_cast<int>(Code::kDataLoss));
    EXPECT_NE(r[0].message_or_payload.find("is not a ttrpc.Response"), std::string::npos);
  }
}

TEST_F(AgentSessionTest, LateReplyForAClientThatLeftIsDropped) {
  AgentSession s(Options());
  Synced(s);
  uint32_t gone = Call(s, 1, 1);
  uint32_t stays = Call(s, 2, 1);
  EXPECT_TRUE(s.OnClientGone(1).empty());
  EXPECT_EQ(s.pending(), 1u);
  Actions a = s.OnAgentBytes(Answer(gone, "late") + Answer(stays, "ok"), At(5));
  EXPECT_FALSE(s.quarantined());
  EXPECT_TRUE(HasNotice(a, AgentSession::Notice::kLateReplyDropped));
  auto r = ToClients(a);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].client, 2u);
}

TEST_F(AgentSessionTest, MidFrameSilenceFailsPendingCallsAndResyncsOnANewId) {
  AgentSession s(Options());
  uint32_t sync = Synced(s);
  uint32_t chan = Call(s, 1, 1);
  Call(s, 1, 3);
  std::string reply = Answer(chan, "slow");
  (void)s.OnAgentBytes(reply.substr(0, 12), At(100));
  ASSERT_EQ(*s.NextTimer(), At(400));
  EXPECT_TRUE(s.OnTimer(At(399)).empty());
  // Steady bytes move the limit on.
  (void)s.OnAgentBytes(reply.substr(12, 1), At(350));
  EXPECT_TRUE(s.OnTimer(At(400)).empty());
  Actions a = s.OnTimer(At(650));
  EXPECT_TRUE(HasNotice(a, AgentSession::Notice::kResynced));
  auto r = ToClients(a);
  ASSERT_EQ(r.size(), 2u);
  for (const Reply& x : r) {
    EXPECT_EQ(x.code, static_cast<int>(Code::kUnavailable));
    EXPECT_NE(x.message_or_payload.find("then nothing for 300 ms"), std::string::npos)
        << x.message_or_payload;
    EXPECT_NE(x.message_or_payload.find("resynchronised"), std::string::npos);
  }
  EXPECT_FALSE(s.quarantined());
  EXPECT_FALSE(s.synced());
  auto sent = ToAgent(a);
  ASSERT_EQ(sent.size(), 1u);  // a new sync request, on a new id
  EXPECT_NE(s.sync_id(), sync);
  EXPECT_EQ(sent[0].stream_id, s.sync_id());
  // The rest of the stalled frame is skipped as stale.
  (void)s.OnAgentBytes(reply.substr(13) + SyncReply(s.sync_id()), At(700));
  EXPECT_TRUE(s.synced());
  EXPECT_FALSE(s.quarantined());
  EXPECT_EQ(Call(s, 1, 5), s.sync_id() + 2);
}

TEST_F(AgentSessionTest, ChannelStreamIdsWrap) {
  AgentSessionOptions o = Options();
  o.wrap_at = 51;  // sync id 41: 43, 45, 47, 49, then 1, 3...
  AgentSession s(o);
  Synced(s);
  std::vector<uint32_t> chans;
  for (uint32_t i = 0; i < 6; ++i) chans.push_back(Call(s, 1, 2 * i + 1));
  EXPECT_EQ(chans, (std::vector<uint32_t>{43, 45, 47, 49, 1, 3}));
  // Replies on both sides of the wrap are routed; 5 was never issued.
  auto r = ToClients(s.OnAgentBytes(Answer(49, "") + Answer(1, "") + Answer(43, ""), At(5)));
  EXPECT_EQ(r.size(), 3u);
  EXPECT_FALSE(s.quarantined());
  (void)s.OnAgentBytes(Answer(5, ""), At(6));
  EXPECT_TRUE(s.quarantined());
}

TEST_F(AgentSessionTest, ClientStreamIdsMustBeOddAndIncreasing) {
  AgentSession s(Options());
  Synced(s);
  Call(s, 1, 5);
  for (uint32_t bad : {2u, 5u, 3u}) {
    auto r = ToClients(s.OnClientRequest(1, bad, kTypeRequest, 0, ""));
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].code, static_cast<int>(Code::kInvalidArgument));
    EXPECT_NE(r[0].message_or_payload.find("must be odd and increasing"), std::string::npos);
  }
  Call(s, 2, 1);  // each client has its own ids
  // Frames that are not requests are ignored.
  EXPECT_TRUE(s.OnClientRequest(1, 7, ttrpc::kTypeData, 0, "").empty());
  EXPECT_EQ(s.pending(), 2u);
}

TEST_F(AgentSessionTest, InFlightRequestsPerClientAreBounded) {
  AgentSession s(Options());
  Synced(s);
  uint32_t stream = 1;
  for (size_t i = 0; i < AgentSession::kMaxPendingPerClient; ++i, stream += 2) {
    ASSERT_EQ(ToAgent(s.OnClientRequest(1, stream, kTypeRequest, 0, "")).size(), 1u);
  }
  auto r = ToClients(s.OnClientRequest(1, stream, kTypeRequest, 0, ""));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kResourceExhausted));
  EXPECT_EQ(ToAgent(s.OnClientRequest(2, 1, kTypeRequest, 0, "")).size(), 1u);  // others are not limited
}

TEST_F(AgentSessionTest, ShutdownFailsPendingAndLaterCalls) {
  AgentSession s(Options());
  Synced(s);
  Call(s, 1, 1);
  auto r = ToClients(s.OnShutdown("signal 15"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kUnavailable));
  EXPECT_EQ(r[0].message_or_payload, "agent unavailable: signal 15");
  EXPECT_FALSE(s.NextTimer());
  r = ToClients(s.OnClientRequest(1, 3, kTypeRequest, 0, ""));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].code, static_cast<int>(Code::kUnavailable));
  EXPECT_TRUE(s.OnShutdown("again").empty());
}

}  // namespace
}  // namespace vmf
