// ChannelServer: the ttrpc protocol layer of the guest agent, driven over a
// socketpair with real frames.
#include <gtest/gtest.h>

#include "agent.pb.h"
#include "health.pb.h"
#include "log.h"
#include "test_peer.h"

namespace vmf::agent {
namespace {

using std::chrono::milliseconds;

class AgentServerTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLogEnabled(false); }
  void TearDown() override { SetLogEnabled(true); }

  static int Code(const ::ttrpc::Response& r) { return r.has_status() ? r.status().code() : 0; }

  static void ExpectServing(TestPeer& peer) {
    ::ttrpc::Response r = peer.Call("grpc.Health", "Check", grpc::CheckRequest());
    ASSERT_EQ(Code(r), 0) << r.status().message();
    grpc::HealthCheckResponse h;
    ASSERT_TRUE(h.ParseFromString(r.payload()));
    EXPECT_EQ(h.status(), grpc::HealthCheckResponse::SERVING);
  }
};

TEST_F(AgentServerTest, HealthCheckAndVersion) {
  TestPeer peer;
  ExpectServing(peer);
  ::ttrpc::Response r = peer.Call("grpc.Health", "Version", grpc::CheckRequest());
  ASSERT_EQ(Code(r), 0);
  grpc::VersionCheckResponse v;
  ASSERT_TRUE(v.ParseFromString(r.payload()));
  EXPECT_EQ(v.grpc_version(), "ttrpc");
  EXPECT_EQ(v.agent_version(), VMF_VERSION);
}

TEST_F(AgentServerTest, ResponseFrameShape) {
  TestPeer peer;
  peer.SendRequest(1, "grpc.Health", "Check", grpc::CheckRequest());
  std::optional<ttrpc::Frame> f = peer.WaitFrame(1);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->type, ttrpc::kTypeResponse);
  EXPECT_EQ(f->flags, 0);
  ::ttrpc::Response r;
  ASSERT_TRUE(r.ParseFromString(f->payload));
  EXPECT_FALSE(r.has_status());
}

TEST_F(AgentServerTest, MalformedRequestPayload) {
  TestPeer peer;
  peer.SendRaw(ttrpc::EncodeFrame(1, ttrpc::kTypeRequest, 0, std::string("\xff\xff\xff\xff\x0f", 5)));
  auto r = peer.WaitResponse(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);
  peer.SetNextId(1);
  ExpectServing(peer);
}

TEST_F(AgentServerTest, MalformedMethodPayload) {
  TestPeer peer;
  ::ttrpc::Request req;
  req.set_service("grpc.AgentService");
  req.set_method("ExecProcess");
  req.set_payload(std::string("\x0a\xff\xff\xff\xff", 5));  // field 1, absurd length
  peer.SendRaw(ttrpc::EncodeFrame(1, ttrpc::kTypeRequest, 0, req.SerializeAsString()));
  auto r = peer.WaitResponse(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);
  peer.SetNextId(1);
  ExpectServing(peer);
}

TEST_F(AgentServerTest, OversizedLengthHeader) {
  TestPeer peer;
  const uint32_t len = ttrpc::kMaxPayload + 1024;
  std::string header = ttrpc::EncodeFrame(9, ttrpc::kTypeRequest, 0, "");
  header[0] = static_cast<char>(len >> 24);
  header[1] = static_cast<char>(len >> 16);
  header[2] = static_cast<char>(len >> 8);
  header[3] = static_cast<char>(len);
  peer.SendRaw(header);
  auto r = peer.WaitResponse(9);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 8);
  peer.SendRaw(std::string(len, 'x'));  // the payload is skipped, not stored
  peer.SetNextId(9);
  ExpectServing(peer);
}

TEST_F(AgentServerTest, UnknownServiceAndMethod) {
  TestPeer peer;
  ::ttrpc::Response r = peer.Call("grpc.AgentService", "Frobnicate", grpc::Empty());
  EXPECT_EQ(Code(r), 12);
  EXPECT_NE(r.status().message().find("Frobnicate"), std::string::npos);
  r = peer.Call("no.Such", "Check", grpc::Empty());
  EXPECT_EQ(Code(r), 12);
  EXPECT_NE(r.status().message().find("no.Such"), std::string::npos);
  ExpectServing(peer);
}

TEST_F(AgentServerTest, EvenAndNonIncreasingStreamIds) {
  TestPeer peer;
  peer.SendRequest(4, "grpc.Health", "Check", grpc::CheckRequest());
  auto r = peer.WaitResponse(4);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);

  peer.SendRequest(11, "grpc.Health", "Check", grpc::CheckRequest());
  r = peer.WaitResponse(11);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 0);
  peer.SendRequest(11, "grpc.Health", "Check", grpc::CheckRequest());  // repeated
  r = peer.WaitResponse(11);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);
  peer.SendRequest(7, "grpc.Health", "Check", grpc::CheckRequest());  // lower
  r = peer.WaitResponse(7);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);
  peer.SetNextId(11);
  ExpectServing(peer);
}

TEST_F(AgentServerTest, SyncResetsStreamIdBaseline) {
  TestPeer peer;
  peer.SetNextId(99);
  ExpectServing(peer);  // id 101
  peer.SendRequest(5, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  auto r = peer.WaitResponse(5);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 0);
  peer.SetNextId(5);
  ExpectServing(peer);  // id 7: accepted after the resync
  // A sync request on an even id is not special.
  peer.SendRequest(20, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  r = peer.WaitResponse(20);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 3);
}

TEST_F(AgentServerTest, SyncDropsDeferredReplies) {
  TestPeer peer;
  grpc::ExecProcessRequest exec;
  exec.set_container_id("c");
  exec.set_exec_id("cat");
  exec.mutable_process()->add_args("cat");
  ASSERT_EQ(Code(peer.Call("grpc.AgentService", "ExecProcess", exec)), 0);
  grpc::WaitProcessRequest wait;
  wait.set_container_id("c");
  wait.set_exec_id("cat");
  uint32_t wait_id = peer.NextId();
  peer.SendRequest(wait_id, "grpc.AgentService", "WaitProcess", wait);
  peer.Drive(milliseconds(50));
  EXPECT_FALSE(peer.HasFrame(wait_id));
  EXPECT_EQ(peer.service().deferred_count(), 1u);

  peer.SendRequest(1, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  ASSERT_TRUE(peer.WaitResponse(1));
  EXPECT_EQ(peer.service().deferred_count(), 0u);
  peer.SetNextId(1);

  grpc::SignalProcessRequest sig;
  sig.set_container_id("c");
  sig.set_exec_id("cat");
  sig.set_signal(9);
  ASSERT_EQ(Code(peer.Call("grpc.AgentService", "SignalProcess", sig)), 0);
  ::ttrpc::Response w = peer.Call("grpc.AgentService", "WaitProcess", wait);
  ASSERT_EQ(Code(w), 0);
  grpc::WaitProcessResponse ws;
  ASSERT_TRUE(ws.ParseFromString(w.payload()));
  EXPECT_EQ(ws.status(), 128 + 9);
  EXPECT_FALSE(peer.HasFrame(wait_id));  // the old session's wait stays unanswered
}

TEST_F(AgentServerTest, HalfFrameThenSilenceThenSync) {
  TestPeer peer;  // default 1 s partial-frame timeout
  ::ttrpc::Request req;
  req.set_service("grpc.Health");
  req.set_method("Check");
  std::string frame = ttrpc::EncodeFrame(3, ttrpc::kTypeRequest, 0, req.SerializeAsString());
  peer.SendRaw(frame.substr(0, frame.size() / 2));
  peer.Drive(milliseconds(1100));
  EXPECT_TRUE(peer.server().host_connected());
  peer.SendRequest(1, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  auto r = peer.WaitResponse(1);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 0);
  EXPECT_FALSE(peer.HasFrame(3));
}

TEST_F(AgentServerTest, GarbageBytes) {
  ChannelServer::Options opt;
  opt.partial_frame_timeout = milliseconds(200);
  TestPeer peer(opt);
  // A frame of an unknown type is ignored.
  peer.SendRaw(ttrpc::EncodeFrame(1, 7, 0, "whatever"));
  // Text: its first 4 bytes read as a huge length -> RESOURCE_EXHAUSTED on
  // whatever id bytes 4-7 spell; the rest is skipped until the silence.
  std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  peer.SendRaw(garbage);
  uint32_t garbage_id = (uint32_t('/') << 24) | (uint32_t(' ') << 16) | (uint32_t('H') << 8) | uint32_t('T');
  auto r = peer.WaitResponse(garbage_id);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 8);
  peer.Drive(milliseconds(300));
  EXPECT_FALSE(peer.HasFrame(1));
  peer.SendRequest(3, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  r = peer.WaitResponse(3);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 0);
}

TEST_F(AgentServerTest, RandomBytesThenResync) {
  ChannelServer::Options opt;
  opt.partial_frame_timeout = milliseconds(100);
  TestPeer peer(opt);
  uint32_t x = 12345;
  auto next = [&x] {
    x = x * 1103515245u + 12345u;
    return static_cast<char>(x >> 16);
  };
  for (int round = 0; round < 50; ++round) {
    std::string junk;
    for (int i = 0; i < 97; ++i) junk += next();
    // Small length headers make the decoder see many short frames too.
    junk += ttrpc::EncodeFrame(static_cast<uint32_t>(round), static_cast<uint8_t>(round % 4), 0,
                               junk.substr(0, round));
    peer.SendRaw(junk);
  }
  peer.Drive(milliseconds(150));
  peer.SendRequest(0x7ffffff1, "grpc.Health", "Check", grpc::CheckRequest(), /*sync=*/true);
  auto r = peer.WaitResponse(0x7ffffff1);
  ASSERT_TRUE(r);
  EXPECT_EQ(Code(*r), 0);
}

TEST_F(AgentServerTest, PeerGoneDoesNotBusyLoop) {
  TestPeer peer;
  ExpectServing(peer);
  peer.ClosePeer();
  auto start = std::chrono::steady_clock::now();
  int iterations = 0;
  while (std::chrono::steady_clock::now() - start < milliseconds(300)) {
    peer.server().RunOnce(1000);
    ++iterations;
  }
  EXPECT_FALSE(peer.server().host_connected());
  EXPECT_LE(iterations, 20);  // ~2 per 50 ms pause; a busy loop makes thousands
  EXPECT_EQ(peer.server().outbound_bytes(), 0u);
}

TEST_F(AgentServerTest, OutboundQueueIsBounded) {
  ChannelServer::Options opt;
  opt.max_outbound_bytes = 64 * 1024;
  TestPeer peer(opt);
  // Nobody reads: the socket buffer fills, then the queue must stay bounded.
  grpc::CheckRequest check;
  ::ttrpc::Request req;
  req.set_service("grpc.Health");
  req.set_method("Version");
  req.set_payload(check.SerializeAsString());
  std::string batch;
  for (uint32_t id = 1; id < 2 * 40000; id += 2)
    batch += ttrpc::EncodeFrame(id, ttrpc::kTypeRequest, 0, req.SerializeAsString());
  const char* p = batch.data();
  size_t left = batch.size();
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (left > 0 && std::chrono::steady_clock::now() < end) {
    ssize_t n = ::send(peer.peer_fd(), p, left, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      left -= static_cast<size_t>(n);
    }
    peer.server().RunOnce(0);
    EXPECT_LE(peer.server().outbound_bytes(), opt.max_outbound_bytes);
  }
  EXPECT_EQ(left, 0u);
}

}  // namespace
}  // namespace vmf::agent
