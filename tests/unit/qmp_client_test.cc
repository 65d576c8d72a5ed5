#include "hypervisor/qemu/qmp_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/io.h"

namespace vmf::qmp {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// QmpStreamParser

std::vector<Result<json>> FeedAll(QmpStreamParser& p, std::string_view data) {
  std::vector<Result<json>> out;
  p.Feed(data, &out);
  return out;
}

TEST(QmpStreamParserTest, SplitsLinesAndToleratesCrLf) {
  QmpStreamParser p;
  auto out = FeedAll(p, "{\"a\":1}\n{\"b\":2}\r\n\n  \r\n{\"c\":3}");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].value(), json({{"a", 1}}));
  EXPECT_EQ(out[1].value(), json({{"b", 2}}));
  EXPECT_GT(p.buffered(), 0u);
  out = FeedAll(p, "\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].value(), json({{"c", 3}}));
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(QmpStreamParserTest, ByteByByte) {
  QmpStreamParser p;
  std::string text = "{\"return\": {\"status\": \"running\"}, \"id\": 7}\r\n{\"event\":\"STOP\"}\n";
  std::vector<Result<json>> out;
  for (char c : text) p.Feed(std::string_view(&c, 1), &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].value()["id"], 7);
  EXPECT_EQ(out[1].value()["event"], "STOP");
}

TEST(QmpStreamParserTest, GarbageLineIsAnErrorAndParsingGoesOn) {
  QmpStreamParser p;
  auto out = FeedAll(p, "{\"a\":1}\nthis is not json\x01\n{\"b\":\n{\"c\":3}\n");
  ASSERT_EQ(out.size(), 4u);
  EXPECT_TRUE(out[0].ok());
  ASSERT_FALSE(out[1].ok());
  EXPECT_EQ(out[1].status().code(), Code::kDataLoss);
  EXPECT_NE(out[1].status().message().find("this is not json?"), std::string::npos);
  EXPECT_FALSE(out[2].ok());
  EXPECT_EQ(out[3].value(), json({{"c", 3}}));
}

TEST(QmpStreamParserTest, LineAtTheLimitIsFine) {
  QmpStreamParser p(20);
  std::string line = "{\"s\":\"" + std::string(12, 'x') + "\"}";  // 20 bytes
  ASSERT_EQ(line.size(), 20u);
  auto out = FeedAll(p, line + "\r\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].ok());
  out = FeedAll(p, line.substr(0, 10));
  out = FeedAll(p, line.substr(10) + "\r");
  out = FeedAll(p, "\n");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].ok());
}

TEST(QmpStreamParserTest, OverLongLineInOneFeedIsSkipped) {
  QmpStreamParser p(20);
  auto out = FeedAll(p, "{\"s\":\"" + std::string(100, 'x') + "\"}\n{\"ok\":true}\n");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].status().code(), Code::kResourceExhausted);
  EXPECT_EQ(out[1].value(), json({{"ok", true}}));
}

TEST(QmpStreamParserTest, OverLongLineAcrossFeedsIsSkippedWithoutBuffering) {
  QmpStreamParser p(100);
  std::vector<Result<json>> out;
  p.Feed("{\"s\":\"", &out);
  for (int i = 0; i < 1000; ++i) {
    p.Feed(std::string(1000, 'y'), &out);
    EXPECT_LE(p.buffered(), 101u);
  }
  ASSERT_EQ(out.size(), 1u);  // reported once
  EXPECT_EQ(out[0].status().code(), Code::kResourceExhausted);
  p.Feed("\"}\n{\"next\":1}\n", &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].value(), json({{"next", 1}}));
}

TEST(QmpStreamParserTest, DeepNestingIsRejected) {
  QmpStreamParser p;
  std::string deep(100000, '[');
  auto out = FeedAll(p, deep + "\n" + "{\"s\":\"[[[[[[\"}\n");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].status().code(), Code::kDataLoss);
  EXPECT_TRUE(out[1].ok());
}

// ---------------------------------------------------------------------------
// A fake QEMU on the other end of a socketpair.

class FakeQemu {
 public:
  FakeQemu() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    client_fd_ = UniqueFd(sv[0]);
    fd_ = UniqueFd(sv[1]);
  }

  UniqueFd TakeClientFd() { return std::move(client_fd_); }

  void Send(std::string_view raw) {
    Status st = WriteAll(fd_.get(), raw, Deadline(5s));
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  void SendLine(const json& j) { Send(j.dump() + "\r\n"); }
  void SendEvent(const std::string& name) {
    SendLine(
        {{"event", name}, {"data", json::object()}, {"timestamp", {{"seconds", 1}, {"microseconds", 2}}}});
  }
  void SendGreeting() {
    SendLine({{"QMP",
               {{"version", {{"qemu", {{"micro", 0}, {"minor", 2}, {"major", 7}}}, {"package", ""}}},
                {"capabilities", {"oob"}}}}});
  }

  // The next command the client sent, or null after 2 s / EOF.
  json ReadCommand() {
    Deadline deadline(2s);
    for (;;) {
      size_t nl = in_.find('\n');
      if (nl != std::string::npos) {
        json j = json::parse(in_.substr(0, nl), nullptr, false);
        in_.erase(0, nl + 1);
        EXPECT_FALSE(j.is_discarded());
        return j;
      }
      if (!WaitReadable(fd_.get(), deadline).ok()) {
        ADD_FAILURE() << "fake QEMU: no command within 2 s";
        return nullptr;
      }
      char buf[4096];
      ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
      if (n <= 0) return nullptr;
      in_.append(buf, static_cast<size_t>(n));
    }
  }
  void Reply(const json& cmd, const json& ret) { SendLine({{"return", ret}, {"id", cmd["id"]}}); }
  // Reads qmp_capabilities and answers it (after the greeting was sent).
  void AnswerCapabilities() {
    json cmd = ReadCommand();
    EXPECT_EQ(cmd["execute"], "qmp_capabilities");
    Reply(cmd, json::object());
  }
  void Hangup() { fd_.reset(); }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd client_fd_;
  UniqueFd fd_;
  std::string in_;
};

// Client connected to `fake` with the handshake done.
std::unique_ptr<QmpClient> ConnectTo(FakeQemu& fake) {
  std::thread qemu([&] {
    fake.SendGreeting();
    fake.AnswerCapabilities();
  });
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  qemu.join();
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

template <typename F>
auto Async(F f) {
  return std::async(std::launch::async, std::move(f));
}

// ---------------------------------------------------------------------------
// Handshake

TEST(QmpClientTest, GreetingAndCapabilities) {
  FakeQemu fake;
  std::thread qemu([&] {
    fake.SendGreeting();
    json cmd = fake.ReadCommand();
    EXPECT_EQ(cmd["execute"], "qmp_capabilities");
    EXPECT_FALSE(cmd.contains("arguments"));
    EXPECT_TRUE(cmd["id"].is_number_unsigned());
    fake.Reply(cmd, json::object());
  });
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  qemu.join();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE((*c)->connected());
  EXPECT_EQ((*c)->greeting()["version"]["qemu"]["major"], 7);
}

TEST(QmpClientTest, CapabilitiesErrorFailsConnect) {
  FakeQemu fake;
  std::thread qemu([&] {
    fake.SendGreeting();
    json cmd = fake.ReadCommand();
    fake.SendLine({{"error", {{"class", "CommandNotFound"}, {"desc", "nope"}}}, {"id", cmd["id"]}});
  });
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  qemu.join();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("QMP handshake"), std::string::npos);
  EXPECT_NE(c.status().message().find("nope"), std::string::npos);
}

TEST(QmpClientTest, GreetingTimeout) {
  FakeQemu fake;
  auto start = Clock::now();
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(100ms));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(c.status().message().find("greeting"), std::string::npos);
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(QmpClientTest, GarbageGreeting) {
  FakeQemu fake;
  fake.Send("SSH-2.0-OpenSSH_9.2\r\n");
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kDataLoss);
  EXPECT_NE(c.status().message().find("greeting"), std::string::npos);
  EXPECT_NE(c.status().message().find("SSH-2.0"), std::string::npos);
}

TEST(QmpClientTest, JsonThatIsNotAGreeting) {
  FakeQemu fake;
  fake.SendLine({{"return", json::object()}});
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kDataLoss);
  EXPECT_NE(c.status().message().find("expected the QMP greeting"), std::string::npos);
}

TEST(QmpClientTest, EofBeforeGreeting) {
  FakeQemu fake;
  UniqueFd fd = fake.TakeClientFd();
  fake.Hangup();
  auto c = QmpClient::FromFd(std::move(fd), Deadline(2s));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kUnavailable);
}

TEST(QmpClientTest, ConnectRetriesUntilTheSocketExists) {
  char dir_template[] = "/tmp/qmp_test.XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  std::string path = std::string(dir_template) + "/qmp.sock";
  auto client = Async([&] { return QmpClient::Connect(path, Deadline(2s)); });
  std::this_thread::sleep_for(50ms);  // QEMU is slow to create its socket
  auto listener = ListenUnix(path);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  ASSERT_TRUE(WaitReadable(listener->get(), Deadline(2s)).ok());
  UniqueFd conn(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  std::string greeting = R"({"QMP": {"version": {}, "capabilities": []}})"
                         "\n";
  ASSERT_TRUE(WriteAll(conn.get(), greeting, Deadline(2s)).ok());
  std::string got;
  while (got.find('\n') == std::string::npos) {
    ASSERT_TRUE(WaitReadable(conn.get(), Deadline(2s)).ok());
    char buf[512];
    ssize_t n = ::read(conn.get(), buf, sizeof(buf));
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  json cmd = json::parse(got.substr(0, got.find('\n')));
  EXPECT_EQ(cmd["execute"], "qmp_capabilities");
  std::string reply = json({{"return", json::object()}, {"id", cmd["id"]}}).dump() + "\n";
  ASSERT_TRUE(WriteAll(conn.get(), reply, Deadline(2s)).ok());
  auto c = client.get();
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  ::unlink(path.c_str());
  ::rmdir(dir_template);
}

TEST(QmpClientTest, ConnectFailsAtTheDeadlineWithoutASocket) {
  auto c = QmpClient::Connect("/tmp/qmp_test_no_such_dir/qmp.sock", Deadline(50ms));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/tmp/qmp_test_no_such_dir/qmp.sock"), std::string::npos);
}

// ---------------------------------------------------------------------------
// Commands and events

TEST(QmpClientTest, EventsBeforeGreetingAndBetweenReplies) {
  FakeQemu fake;
  std::thread qemu([&] {
    fake.SendEvent("RESET");
    fake.SendGreeting();
    fake.SendEvent("STOP");
    json cmd = fake.ReadCommand();
    fake.SendEvent("RESUME");
    fake.Reply(cmd, json::object());
    cmd = fake.ReadCommand();
    EXPECT_EQ(cmd["execute"], "query-status");
    fake.SendEvent("POWERDOWN");
    fake.Reply(cmd, {{"status", "running"}, {"running", true}});
    fake.SendEvent("SHUTDOWN");
  });
  auto c = QmpClient::FromFd(fake.TakeClientFd(), Deadline(2s));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto r = (*c)->Execute("query-status");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["status"], "running");
  ASSERT_TRUE((*c)->WaitEvent("SHUTDOWN", Deadline(2s)).ok());
  qemu.join();
  std::vector<std::string> names;
  for (const json& e : (*c)->TakeEvents()) names.push_back(e["event"]);
  EXPECT_EQ(names, (std::vector<std::string>{"RESET", "STOP", "RESUME", "POWERDOWN"}));
  EXPECT_TRUE((*c)->TakeEvents().empty());
}

TEST(QmpClientTest, ReplySplitAcrossManySmallWrites) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    EXPECT_EQ(cmd["arguments"], json({{"id", "cpu1"}}));
    std::string line = json({{"return", {{"a", "b"}, {"n", {1, 2, 3}}}}, {"id", cmd["id"]}}).dump() + "\r\n";
    for (char ch : line) {
      fake.Send(std::string_view(&ch, 1));
      if (ch == ',') std::this_thread::sleep_for(1ms);
    }
  });
  auto r = c->Execute("query-thing", {{"id", "cpu1"}}, Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["n"], json({1, 2, 3}));
}

TEST(QmpClientTest, LongLineIsFine) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::string big(200 * 1024, 'z');
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    fake.Reply(cmd, {{"blob", big}});
  });
  auto r = c->Execute("human-monitor-command", {{"command-line", "info mtree"}}, Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["blob"], big);
}

TEST(QmpClientTest, OverLimitLineIsSkippedAndTheNextMessageWorks) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    // 1.5 MiB reply: over the 1 MiB limit; it is dropped, so the command waits on.
    fake.Reply(cmd, {{"blob", std::string(3 << 19, 'x')}});
    fake.SendEvent("AFTER");
    fake.Reply(cmd, "second answer");
  });
  auto r = c->Execute("query-big", nullptr, Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "second answer");
  EXPECT_TRUE(c->WaitEvent("AFTER", Deadline(1s)).ok());
  EXPECT_TRUE(c->connected());
}

TEST(QmpClientTest, OutOfOrderRepliesAreMatchedById) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto a = Async([&] { return c->Execute("cmd-a", {{"x", 1}}, Deadline(2s)); });
  auto b = Async([&] { return c->Execute("cmd-b", {{"x", 2}}, Deadline(2s)); });
  json first = fake.ReadCommand();
  json second = fake.ReadCommand();
  EXPECT_NE(first["id"], second["id"]);
  fake.SendLine({{"return", {}}, {"id", 999999}});  // unknown id: dropped
  fake.Reply(second, second["execute"]);
  std::this_thread::sleep_for(10ms);
  fake.Reply(first, first["execute"]);
  auto ra = a.get();
  auto rb = b.get();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(*ra, "cmd-a");
  EXPECT_EQ(*rb, "cmd-b");
}

TEST(QmpClientTest, ErrorReplyNamesCommandClassAndDesc) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    fake.SendLine(
        {{"error", {{"class", "GenericError"}, {"desc", "Invalid CPU socket-id: 1 must be in range 0:0"}}},
         {"id", cmd["id"]}});
    cmd = fake.ReadCommand();
    fake.SendLine(
        {{"error", {{"class", "DeviceNotFound"}, {"desc", "Device 'd9' not found"}}}, {"id", cmd["id"]}});
  });
  auto r = c->Execute("device_add", {{"driver", "host-x86_64-cpu"}}, Deadline(2s));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "QMP command 'device_add' failed: GenericError: Invalid CPU socket-id: 1 must be in "
            "range 0:0");
  r = c->Execute("device_del", {{"id", "d9"}}, Deadline(2s));
  qemu.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_TRUE(c->connected());
}

TEST(QmpClientTest, ErrorWithoutIdFailsTheOnlyPendingCommand) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::thread qemu([&] {
    fake.ReadCommand();
    fake.SendLine({{"error", {{"class", "GenericError"}, {"desc", "JSON parse error, stray '}'"}}}});
  });
  auto r = c->Execute("stop", nullptr, Deadline(2s));
  qemu.join();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'stop'"), std::string::npos);
  EXPECT_NE(r.status().message().find("JSON parse error"), std::string::npos);
  EXPECT_NE(r.status().message().find("without id"), std::string::npos);
}

TEST(QmpClientTest, ErrorWithoutIdIsIgnoredWhenSeveralArePending) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto a = Async([&] { return c->Execute("cmd-a", nullptr, Deadline(2s)); });
  auto b = Async([&] { return c->Execute("cmd-b", nullptr, Deadline(2s)); });
  json first = fake.ReadCommand();
  json second = fake.ReadCommand();
  fake.SendLine({{"error", {{"class", "GenericError"}, {"desc", "which one?"}}}});
  fake.Reply(first, 1);
  fake.Reply(second, 2);
  auto ra = a.get();
  auto rb = b.get();
  ASSERT_TRUE(ra.ok()) << ra.status().ToString();
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(ra->get<int>() + rb->get<int>(), 3);
}

TEST(QmpClientTest, GarbageLineIsSkipped) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    static const char kGarbage[] = "\x00\xff garbage {{{\n";
    fake.Send(std::string_view(kGarbage, sizeof(kGarbage) - 1));
    fake.Send("[1,2,3]\n\"just a string\"\n{\"something\": \"else\"}\n");
    fake.Reply(cmd, {{"ok", true}});
  });
  auto r = c->Execute("query-status", nullptr, Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)["ok"], true);
}

TEST(QmpClientTest, DeadlineWhenQemuNeverReplies) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto start = Clock::now();
  auto r = c->Execute("query-migrate", nullptr, Deadline(100ms));
  EXPECT_LT(Clock::now() - start, 500ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("query-migrate"), std::string::npos);
  // The late reply is dropped; the connection still works.
  json late = fake.ReadCommand();
  fake.Reply(late, "late");
  std::thread qemu([&] {
    json cmd = fake.ReadCommand();
    fake.Reply(cmd, "on time");
  });
  auto r2 = c->Execute("query-status", nullptr, Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(*r2, "on time");
}

TEST(QmpClientTest, EofFailsAllPendingCommandsAtOnce) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto a = Async([&] { return c->Execute("cmd-a", nullptr, Deadline(5s)); });
  auto b = Async([&] { return c->Execute("cmd-b", nullptr, Deadline(5s)); });
  fake.ReadCommand();
  fake.ReadCommand();
  auto start = Clock::now();
  fake.Hangup();
  auto ra = a.get();
  auto rb = b.get();
  EXPECT_LT(Clock::now() - start, 500ms);
  ASSERT_FALSE(ra.ok());
  ASSERT_FALSE(rb.ok());
  EXPECT_EQ(ra.status().code(), Code::kUnavailable);
  EXPECT_EQ(rb.status().code(), Code::kUnavailable);
  EXPECT_NE(ra.status().message().find("QMP connection closed"), std::string::npos);
  EXPECT_NE(ra.status().message().find("cmd-a"), std::string::npos);
  EXPECT_FALSE(c->connected());
  start = Clock::now();
  auto later = c->Execute("cmd-c", nullptr, Deadline(5s));
  EXPECT_LT(Clock::now() - start, 1s) << "a closed connection fails at once, not at the deadline";
  EXPECT_EQ(later.status().code(), Code::kUnavailable);
  auto ev = c->WaitEvent("STOP", Deadline(5s));
  EXPECT_EQ(ev.status().code(), Code::kUnavailable);
}

TEST(QmpClientTest, StuckWriteTimesOutAndClosesTheConnection) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  // The fake never reads: a 2 MiB command cannot fit in the socket buffer.
  json args = {{"blob", std::string(2 << 20, 'b')}};
  auto start = Clock::now();
  auto r = c->Execute("big", args, Deadline(100ms));
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("'big'"), std::string::npos);
  // Half a command may be on the wire: the connection is closed at once.
  EXPECT_FALSE(c->connected());
  EXPECT_EQ(c->Execute("query-status", nullptr, Deadline(1s)).status().code(), Code::kUnavailable);
}

TEST(QmpClientTest, WriterQueuedBehindAStuckWriteKeepsItsDeadline) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  json args = {{"blob", std::string(2 << 20, 'b')}};
  auto big = Async([&] { return c->Execute("big", args, Deadline(2s)); });
  std::this_thread::sleep_for(50ms);  // "big" is now stuck in the socket buffer
  auto start = Clock::now();
  auto small = c->Execute("small", nullptr, Deadline(50ms));
  // Well before "big"'s deadline, with room for a loaded machine.
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(small.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(small.status().message().find("'small'"), std::string::npos);
  EXPECT_EQ(big.get().status().code(), Code::kDeadlineExceeded);
}

TEST(QmpClientTest, EventsQueuedBeforeEofCanStillBeTaken) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  fake.SendLine({{"event", "SHUTDOWN"}, {"data", {{"guest", false}, {"reason", "host-qmp-quit"}}}});
  fake.Hangup();
  auto ev = c->WaitEvent("SHUTDOWN", Deadline(1s));
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  EXPECT_EQ((*ev)["data"]["reason"], "host-qmp-quit");
}

TEST(QmpClientTest, WaitEvent) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto waiter = Async([&] { return c->WaitEvent("STOP", Deadline(2s)); });
  std::this_thread::sleep_for(20ms);
  fake.SendEvent("RESUME");
  fake.SendLine({{"event", "STOP"}, {"data", {{"n", 1}}}});
  auto stop = waiter.get();
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ((*stop)["data"]["n"], 1);
  // RESUME was not consumed by waiting for STOP; STOP was.
  EXPECT_TRUE(c->WaitEvent("RESUME", Deadline(1s)).ok());
  auto start = Clock::now();
  auto none = c->WaitEvent("STOP", Deadline(50ms));
  EXPECT_EQ(none.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(none.status().message().find("STOP"), std::string::npos);
  EXPECT_LT(Clock::now() - start, 500ms);
  // An event that came before WaitEvent is found too (oldest first).
  fake.SendLine({{"event", "MIGRATION"}, {"data", {{"status", "active"}}}});
  fake.SendLine({{"event", "MIGRATION"}, {"data", {{"status", "completed"}}}});
  auto m1 = c->WaitEvent("MIGRATION", Deadline(1s));
  auto m2 = c->WaitEvent("MIGRATION", Deadline(1s));
  ASSERT_TRUE(m1.ok() && m2.ok());
  EXPECT_EQ((*m1)["data"]["status"], "active");
  EXPECT_EQ((*m2)["data"]["status"], "completed");
}

TEST(QmpClientTest, EventQueueKeepsTheLast256) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  std::string lines;
  for (int i = 0; i < 300; ++i) lines += json({{"event", "E"}, {"data", {{"i", i}}}}).dump() + "\n";
  lines += R"({"event": "LAST"})"
           "\n";
  fake.Send(lines);
  ASSERT_TRUE(c->WaitEvent("LAST", Deadline(2s)).ok());
  auto events = c->TakeEvents();
  ASSERT_EQ(events.size(), QmpClient::kMaxEvents - 1);  // LAST was consumed
  EXPECT_EQ(events.front()["data"]["i"], 300 - 255);
  EXPECT_EQ(events.back()["data"]["i"], 299);
}

TEST(QmpClientTest, ExecuteWithFdPassesTheFd) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd rd(pipe_fds[0]), wr(pipe_fds[1]);
  std::thread qemu([&] {
    // Receive the command bytes and the fd that came with them.
    ASSERT_TRUE(WaitReadable(fake.fd(), Deadline(2s)).ok());
    char buf[4096];
    iovec iov{buf, sizeof(buf)};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(fake.fd(), &msg, MSG_CMSG_CLOEXEC);
    ASSERT_GT(n, 0);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    ASSERT_NE(cmsg, nullptr);
    ASSERT_EQ(cmsg->cmsg_type, SCM_RIGHTS);
    int got = -1;
    std::memcpy(&got, CMSG_DATA(cmsg), sizeof(int));
    UniqueFd passed(got);
    EXPECT_EQ(::write(passed.get(), "hi", 2), 2);
    std::string line(buf, static_cast<size_t>(n));
    ASSERT_EQ(line.back(), '\n');
    json cmd = json::parse(line);
    EXPECT_EQ(cmd["execute"], "getfd");
    EXPECT_EQ(cmd["arguments"]["fdname"], "vmf-out");
    fake.Reply(cmd, json::object());
  });
  auto r = c->ExecuteWithFd("getfd", {{"fdname", "vmf-out"}}, wr.get(), Deadline(2s));
  qemu.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  char out[2];
  ASSERT_EQ(::read(rd.get(), out, 2), 2);
  EXPECT_EQ(std::string(out, 2), "hi");
}

TEST(QmpClientTest, ArgumentsMustBeAnObject) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto r = c->Execute("cont", json::array({1}), Deadline(1s));
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
}

TEST(QmpClientTest, DestructorWithOpenConnectionReturnsPromptly) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto start = Clock::now();
  c.reset();
  EXPECT_LT(Clock::now() - start, 1s);
}

TEST(QmpClientTest, CloseFailsPendingCommand) {
  FakeQemu fake;
  auto c = ConnectTo(fake);
  ASSERT_TRUE(c);
  auto a = Async([&] { return c->Execute("cmd-a", nullptr, Deadline(5s)); });
  fake.ReadCommand();
  c->Close();
  auto ra = a.get();
  EXPECT_EQ(ra.status().code(), Code::kUnavailable);
  EXPECT_FALSE(c->connected());
}

}  // namespace
}  // namespace vmf::qmp
