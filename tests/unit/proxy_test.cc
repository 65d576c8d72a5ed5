// The proxy against a fake agent channel (a unix socket server standing in
// for QEMU's chardev): sync past stale bytes, multiplexing, routing, errors.
#include "proxy/proxy.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/io.h"
#include "health.pb.h"
#include "ttrpc.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"

namespace vmf {
namespace {

using ttrpc::DecodeEvent;
using ttrpc::EncodeFrame;

std::string OkResponse(const std::string& payload) {
  ::ttrpc::Response r;
  r.set_payload(payload);
  return r.SerializeAsString();
}

// Reads frames from fd until n requests arrived (or EOF).
std::vector<ttrpc::Frame> ReadRequests(int fd, ttrpc::FrameDecoder& d, size_t n) {
  std::vector<ttrpc::Frame> got;
  std::vector<DecodeEvent> ev;
  char buf[4096];
  while (got.size() < n) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r <= 0) break;
    ev.clear();
    d.Feed(std::string_view(buf, static_cast<size_t>(r)), &ev);
    for (auto& e : ev) got.push_back(std::move(e.frame));
  }
  return got;
}

class ProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/vmf-proxy-test-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto l = ListenUnix(dir_ + "/agent.sock");
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    agent_listen_ = std::move(*l);
    auto cl = ListenUnix(dir_ + "/console.sock");
    ASSERT_TRUE(cl.ok()) << cl.status().ToString();
    console_listen_ = std::move(*cl);
    opts_.vm_id = "testvm";
    opts_.agent_socket = dir_ + "/agent.sock";
    opts_.console_socket = dir_ + "/console.sock";
    opts_.listen_socket = dir_ + "/proxy.sock";
    opts_.log_file = dir_ + "/proxy.log";
    opts_.connect_timeout = std::chrono::seconds(5);
    opts_.frame_timeout = std::chrono::milliseconds(300);
    proxy_ = std::thread([this] { proxy_status_ = RunProxy(opts_); });
    // The proxy connects to the fake agent.
    agent_ = UniqueFd(::accept(agent_listen_.get(), nullptr, nullptr));
    ASSERT_TRUE(agent_.valid());
  }
  void TearDown() override {
    agent_.reset();  // channel EOF: the proxy exits
    if (proxy_.joinable()) proxy_.join();
    EXPECT_TRUE(proxy_status_.ok()) << proxy_status_.ToString();
    EXPECT_FALSE(std::filesystem::exists(opts_.listen_socket)) << "socket removed on exit";
    std::filesystem::remove_all(dir_);
  }
  // Answers the sync request, after sending `stale` bytes first.
  uint32_t AnswerSync(const std::string& stale) {
    EXPECT_TRUE(WriteAll(agent_.get(), stale, Deadline(std::chrono::seconds(2))).ok());
    auto reqs = ReadRequests(agent_.get(), decoder_, 1);
    EXPECT_EQ(reqs.size(), 1u);
    if (reqs.empty()) return 0;
    ::ttrpc::Request req;
    EXPECT_TRUE(req.ParseFromString(reqs[0].payload));
    EXPECT_EQ(req.service(), "grpc.Health");
    EXPECT_EQ(req.metadata_size(), 1);
    EXPECT_EQ(req.metadata(0).key(), "vmf-sync");
    grpc::HealthCheckResponse ok;
    ok.set_status(grpc::HealthCheckResponse::SERVING);
    EXPECT_TRUE(
        WriteAll(agent_.get(),
                 EncodeFrame(reqs[0].stream_id, ttrpc::kTypeResponse, 0, OkResponse(ok.SerializeAsString())),
                 Deadline(std::chrono::seconds(2)))
            .ok());
    return reqs[0].stream_id;
  }
  // Sends one call, lets `answer` make what the fake agent sends back for
  // its stream, and returns the call's result.
  Result<std::string> CallAnsweredBy(ttrpc::Client* c,
                                     const std::function<std::string(uint32_t stream)>& answer) {
    Result<std::string> r = InvalidArgument("unset");
    std::thread th([&] { r = c->CallRaw("svc", "M", "", Deadline(std::chrono::seconds(10))); });
    auto reqs = ReadRequests(agent_.get(), decoder_, 1);
    EXPECT_EQ(reqs.size(), 1u);
    if (!reqs.empty()) {
      EXPECT_TRUE(WriteAll(agent_.get(), answer(reqs[0].stream_id), Deadline(std::chrono::seconds(2))).ok());
    }
    th.join();
    return r;
  }
  std::unique_ptr<ttrpc::Client> Client() {
    auto c = ttrpc::Client::Connect(opts_.listen_socket, Deadline(std::chrono::seconds(5)));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::string dir_;
  ProxyOptions opts_;
  UniqueFd agent_listen_;
  UniqueFd console_listen_;  // the proxy connects; tests that use the console accept it
  UniqueFd agent_;
  ttrpc::FrameDecoder decoder_;
  std::thread proxy_;
  Status proxy_status_;
};

TEST_F(ProxyTest, SyncSkipsStaleBytesAndRoutesRepliesToTheirClients) {
  // Stale bytes: half a frame, garbage, and a whole reply for an old stream.
  std::string stale = std::string("\x00\x00\x00\x40\x00\x00", 6) + "garbage" +
                      EncodeFrame(99, ttrpc::kTypeResponse, 0, OkResponse("old"));
  uint32_t sync = AnswerSync(stale);
  ASSERT_NE(sync, 0u);
  EXPECT_EQ(sync % 2, 1u);

  auto a = Client();
  auto b = Client();
  ASSERT_TRUE(a && b);
  Result<std::string> ra = InvalidArgument("unset"), rb = InvalidArgument("unset");
  std::thread ta([&] { ra = a->CallRaw("svc", "A", "from-a", Deadline(std::chrono::seconds(5))); });
  std::thread tb([&] { rb = b->CallRaw("svc", "B", "from-b", Deadline(std::chrono::seconds(5))); });
  auto reqs = ReadRequests(agent_.get(), decoder_, 2);
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_NE(reqs[0].stream_id, reqs[1].stream_id);
  EXPECT_GT(reqs[0].stream_id, sync);
  // Answer in reverse order. (A reply for a stream nobody opened would be a
  // protocol violation: see ReplyForAStreamNeverOpenedQuarantines.)
  std::string out;
  for (int i = 1; i >= 0; --i) {
    ::ttrpc::Request req;
    ASSERT_TRUE(req.ParseFromString(reqs[i].payload));
    out += EncodeFrame(reqs[i].stream_id, ttrpc::kTypeResponse, 0, OkResponse("echo:" + req.payload()));
  }
  ASSERT_TRUE(WriteAll(agent_.get(), out, Deadline(std::chrono::seconds(2))).ok());
  ta.join();
  tb.join();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(*ra, "echo:from-a");
  EXPECT_EQ(*rb, "echo:from-b");
}

TEST_F(ProxyTest, RequestsBeforeSyncWaitAndAgentErrorsPassThrough) {
  auto c = Client();
  ASSERT_TRUE(c);
  Result<std::string> r = InvalidArgument("unset");
  std::thread t([&] { r = c->CallRaw("svc", "M", "x", Deadline(std::chrono::seconds(5))); });
  AnswerSync("");
  auto reqs = ReadRequests(agent_.get(), decoder_, 1);
  ASSERT_EQ(reqs.size(), 1u);
  ::ttrpc::Response err;
  err.mutable_status()->set_code(5);
  err.mutable_status()->set_message("no such process");
  ASSERT_TRUE(WriteAll(agent_.get(),
                       EncodeFrame(reqs[0].stream_id, ttrpc::kTypeResponse, 0, err.SerializeAsString()),
                       Deadline(std::chrono::seconds(2)))
                  .ok());
  t.join();
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("no such process"), std::string::npos);
}

TEST_F(ProxyTest, OversizedReplyFailsThatCallAndQuarantines) {
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  Result<std::string> r1 = InvalidArgument("unset");
  std::thread t1([&] { r1 = c->CallRaw("svc", "Big", "", Deadline(std::chrono::seconds(5))); });
  auto reqs = ReadRequests(agent_.get(), decoder_, 1);
  ASSERT_EQ(reqs.size(), 1u);
  std::string hdr = EncodeFrame(reqs[0].stream_id, ttrpc::kTypeResponse, 0, "");
  hdr[0] = 0x7f;  // ~2 GiB announced
  ASSERT_TRUE(WriteAll(agent_.get(), hdr + std::string(1000, 'z'), Deadline(std::chrono::seconds(2))).ok());
  t1.join();
  EXPECT_EQ(r1.status().code(), Code::kResourceExhausted) << r1.status().ToString();
  EXPECT_NE(r1.status().message().find("quarantined"), std::string::npos) << r1.status().ToString();
  // The rest of that "frame" is not waited for: the channel is quarantined,
  // and a later call fails at once.
  auto start = Clock::now();
  auto later = c->CallRaw("svc", "Next", "", Deadline(std::chrono::seconds(5)));
  EXPECT_EQ(later.status().code(), Code::kDataLoss) << later.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
}

void ExpectQuarantined(ttrpc::Client* c) {
  auto start = Clock::now();
  auto r = c->CallRaw("svc", "Later", "", Deadline(std::chrono::seconds(5)));
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("quarantined"), std::string::npos) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
}

TEST_F(ProxyTest, ReplyForAStreamNeverOpenedQuarantines) {
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(c.get(), [](uint32_t id) {
    return EncodeFrame(id + 1000, ttrpc::kTypeResponse, 0, OkResponse("forged")) +
           EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse("real"));
  });
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("never opened"), std::string::npos) << r.status().ToString();
  ExpectQuarantined(c.get());
}

TEST_F(ProxyTest, MalformedReplyAndRequestFramesQuarantine) {
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(c.get(), [](uint32_t id) {
    return EncodeFrame(id, ttrpc::kTypeResponse, 0, std::string("\xff\xff\xff\xff", 4));
  });
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("not a ttrpc.Response"), std::string::npos) << r.status().ToString();
  ExpectQuarantined(c.get());
}

TEST_F(ProxyTest, RequestFromTheAgentQuarantines) {
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(c.get(), [](uint32_t id) { return EncodeFrame(id, ttrpc::kTypeRequest, 0, ""); });
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("may only send responses"), std::string::npos) << r.status().ToString();
}

TEST_F(ProxyTest, HalfAFrameThenSilenceFailsTheCallAndResyncs) {
  uint32_t first_sync = AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  std::string rest;
  auto start = Clock::now();
  auto r = CallAnsweredBy(c.get(), [&](uint32_t id) {
    std::string f = EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse(std::string(1000, 'h')));
    rest = f.substr(f.size() / 2);
    return f.substr(0, f.size() / 2);
  });
  auto took = Clock::now() - start;
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("and then nothing for"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("resynchronised"), std::string::npos) << r.status().ToString();
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(3));
  // A new session: the rest of the stalled frame (say the VM was paused) is
  // stale, and the channel works again.
  uint32_t second_sync = AnswerSync(rest);
  EXPECT_NE(second_sync, first_sync);
  auto again = CallAnsweredBy(
      c.get(), [](uint32_t id) { return EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse("fine")); });
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, "fine");
}

TEST_F(ProxyTest, SlowButSteadyFrameIsFine) {
  // A frame whose bytes arrive with pauses, each shorter than the frame timeout.
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(c.get(), [this](uint32_t id) {
    std::string f = EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse("slow"));
    for (size_t i = 0; i + 1 < f.size(); i += 4) {
      size_t n = std::min<size_t>(4, f.size() - 1 - i);
      EXPECT_TRUE(WriteAll(agent_.get(), f.substr(i, n), Deadline(std::chrono::seconds(2))).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return f.substr(f.size() - 1);
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "slow");
}

TEST_F(ProxyTest, LateReplyForAClientThatLeftIsDroppedQuietly) {
  AnswerSync("");
  uint32_t abandoned = 0;
  {
    auto gone = Client();
    ASSERT_TRUE(gone);
    auto r = gone->CallRaw("svc", "Slow", "", Deadline(std::chrono::milliseconds(200)));
    EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
    auto reqs = ReadRequests(agent_.get(), decoder_, 1);
    ASSERT_EQ(reqs.size(), 1u);
    abandoned = reqs[0].stream_id;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the proxy sees the client go
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(c.get(), [&](uint32_t id) {
    return EncodeFrame(abandoned, ttrpc::kTypeResponse, 0, OkResponse("late")) +
           EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse("fine"));
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "fine");
}

TEST_F(ProxyTest, EndlessGarbageBeforeTheSyncReplyQuarantines) {
  auto c = Client();
  ASSERT_TRUE(c);
  Result<std::string> r = InvalidArgument("unset");
  auto start = Clock::now();
  std::atomic<bool> done{false};
  std::thread call([&] {
    r = c->CallRaw("svc", "M", "", Deadline(std::chrono::seconds(20)));
    done = true;
  });
  // Junk that never contains a reply on the sync stream, until the proxy gives up.
  std::string junk(1 << 20, 'j');
  for (int i = 0; i < 12 && !done; ++i) {
    if (!WriteAll(agent_.get(), junk, Deadline(std::chrono::seconds(3))).ok()) break;
  }
  call.join();
  EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
  EXPECT_NE(r.status().message().find("without answering the sync request"), std::string::npos)
      << r.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
}

TEST_F(ProxyTest, ChannelLossFailsPendingCallsAtOnce) {
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  Result<std::string> r = InvalidArgument("unset");
  auto start = Clock::now();
  std::thread t([&] { r = c->CallRaw("svc", "Slow", "", Deadline(std::chrono::seconds(30))); });
  ReadRequests(agent_.get(), decoder_, 1);
  agent_.reset();
  t.join();
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST_F(ProxyTest, ManyThreadsOnOneClientAllGetTheirOwnReplies) {
  // Regression: ids must reach the proxy in increasing order even when
  // several threads call at once on one connection.
  AnswerSync("");
  auto c = Client();
  ASSERT_TRUE(c);
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    // The fake agent answers every request with its own payload.
    ttrpc::FrameDecoder d;
    std::vector<DecodeEvent> ev;
    char buf[65536];
    while (!stop) {
      pollfd p{agent_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::read(agent_.get(), buf, sizeof(buf));
      if (n <= 0) return;
      ev.clear();
      d.Feed(std::string_view(buf, static_cast<size_t>(n)), &ev);
      std::string out;
      for (auto& e : ev) {
        ::ttrpc::Request req;
        req.ParseFromString(e.frame.payload);
        out += EncodeFrame(e.frame.stream_id, ttrpc::kTypeResponse, 0, OkResponse(req.payload()));
      }
      (void)WriteAll(agent_.get(), out, Deadline(std::chrono::seconds(2)));
    }
  });
  std::atomic<int> good{0};
  std::vector<std::thread> callers;
  callers.reserve(8);
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        std::string msg = std::to_string(t) + ":" + std::to_string(i);
        auto r = c->CallRaw("svc", "Echo", msg, Deadline(std::chrono::seconds(5)));
        if (r.ok() && *r == msg) good++;
      }
    });
  }
  for (auto& t : callers) t.join();
  stop = true;
  echo.join();
  EXPECT_EQ(good.load(), 200);
}

TEST_F(ProxyTest, BadClientStreamIdsAreRejected) {
  AnswerSync("");
  auto fd = ConnectUnix(opts_.listen_socket);
  ASSERT_TRUE(fd.ok());
  ::ttrpc::Request req;
  req.set_service("svc");
  req.set_method("M");
  std::string frames = EncodeFrame(2, ttrpc::kTypeRequest, 0, req.SerializeAsString());
  ASSERT_TRUE(WriteAll(fd->get(), frames, Deadline(std::chrono::seconds(2))).ok());
  ttrpc::FrameDecoder d;
  auto replies = ReadRequests(fd->get(), d, 1);
  ASSERT_EQ(replies.size(), 1u);
  ::ttrpc::Response resp;
  ASSERT_TRUE(resp.ParseFromString(replies[0].payload));
  EXPECT_EQ(resp.status().code(), 3);
}

TEST_F(ProxyTest, ConsoleFloodIsReadAtABoundedRate) {
  AnswerSync("");
  UniqueFd console(::accept(console_listen_.get(), nullptr, nullptr));
  ASSERT_TRUE(console.valid());
  ASSERT_TRUE(SetNonBlocking(console.get(), true).ok());
  std::string chunk;
  for (int i = 0; chunk.size() < 60000; ++i)
    chunk += "flood " + std::to_string(i) + std::string(200, '.') + "\n";
  // Write as fast as the proxy takes it, for 1.5 s.
  auto start = Clock::now();
  size_t sent = 0, off = 0;
  while (Clock::now() - start < std::chrono::milliseconds(1500)) {
    ssize_t n = ::write(console.get(), chunk.data() + off, chunk.size() - off);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      off = (off + static_cast<size_t>(n)) % chunk.size();
    } else {
      pollfd p{console.get(), POLLOUT, 0};
      ::poll(&p, 1, 10);
    }
  }
  // The 128 KiB burst, 16 KiB/s after it, and what the socket holds (about
  // 200 KiB); unthrottled, the proxy would have taken megabytes.
  EXPECT_LT(sent, 600u * 1024) << "the proxy read the console at " << sent / 1.5 / 1024 << " KiB/s";
  EXPECT_GT(sent, 128u * 1024);
  // The agent channel is served all along.
  auto c = Client();
  ASSERT_TRUE(c);
  auto r = CallAnsweredBy(
      c.get(), [](uint32_t id) { return EncodeFrame(id, ttrpc::kTypeResponse, 0, OkResponse("ok")); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto log = ReadFile(opts_.log_file, 16 << 20);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_NE(log->find("faster than 16 KiB/s"), std::string::npos);
  // Nothing is dropped: the lines logged so far are the first ones, in order.
  size_t first = log->find("flood 0.");
  size_t later = log->find("flood 100.");
  EXPECT_NE(first, std::string::npos);
  EXPECT_NE(later, std::string::npos);
  EXPECT_LT(first, later);
  EXPECT_LT(log->size(), 600u * 1024);
}

}  // namespace
}  // namespace vmf
