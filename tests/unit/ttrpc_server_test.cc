// ttrpc::Server over a real socket: in-order by default, and with
// max_inflight > 1 a blocked request does not hold up the ones behind it on
// the same connection (containerd's Wait before Start).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <mutex>
#include <thread>

#include "common/io.h"
#include "health.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/server.h"

namespace vmf {
namespace {

class ServerFixture {
 public:
  explicit ServerFixture(size_t max_inflight) : server_(8, max_inflight) {
    char tmpl[] = "/tmp/vmf_ttrpc_XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/s.sock";
  }
  ~ServerFixture() {
    Release();
    server_.Shutdown();
    if (thread_.joinable()) thread_.join();
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  ttrpc::Server& server() { return server_; }
  void Serve() {
    auto l = ListenUnix(path_);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    thread_ = std::thread([this, fd = std::move(*l)]() mutable { (void)server_.Serve(std::move(fd)); });
  }
  std::unique_ptr<ttrpc::Client> Connect() {
    auto c = ttrpc::Client::Connect(path_, Deadline(std::chrono::seconds(5)));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }
  // "Block" waits until Release(); "Release" releases.
  void RegisterBlockAndRelease() {
    server_.Register("t.T", "Block", [this](const std::string&, const ttrpc::Peer&) -> Result<std::string> {
      std::unique_lock<std::mutex> l(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait_for(l, std::chrono::seconds(10), [this] { return released_; });
      return released_ ? Result<std::string>(std::string()) : Result<std::string>(Internal("never released"));
    });
    server_.Register("t.T", "Release", [this](const std::string&, const ttrpc::Peer&) -> Result<std::string> {
      Release();
      return std::string();
    });
  }
  // True once n Block calls are running in the server's handlers.
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(10), [&] { return entered_ >= n; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  ttrpc::Server server_;
  std::string dir_, path_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  int entered_ = 0;
};

TEST(TtrpcServerTest, ConcurrentRequestsOnOneConnectionAreAnsweredOutOfOrder) {
  ServerFixture f(16);
  f.RegisterBlockAndRelease();
  f.Serve();
  auto c = f.Connect();
  ASSERT_TRUE(c);
  grpc::CheckRequest req;
  grpc::HealthCheckResponse resp;
  auto blocked = std::async(std::launch::async, [&] {
    grpc::HealthCheckResponse r;
    return c->Call("t.T", "Block", req, &r, Deadline(std::chrono::seconds(20)));
  });
  ASSERT_TRUE(f.WaitEntered(1));
  // Same connection: answered while Block still waits, and ends it.
  Status st = c->Call("t.T", "Release", req, &resp, Deadline(std::chrono::seconds(5)));
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(blocked.get().ok());
  // An unknown method is UNIMPLEMENTED, as containerd expects.
  EXPECT_EQ(c->Call("t.T", "Nope", req, &resp, Deadline(std::chrono::seconds(5))).code(),
            Code::kUnimplemented);
}

TEST(TtrpcServerTest, InOrderByDefault) {
  ServerFixture f(1);
  f.RegisterBlockAndRelease();
  f.Serve();
  auto c = f.Connect();
  ASSERT_TRUE(c);
  grpc::CheckRequest req;
  auto blocked = std::async(std::launch::async, [&] {
    grpc::HealthCheckResponse r;
    return c->Call("t.T", "Block", req, &r, Deadline(std::chrono::seconds(20)));
  });
  ASSERT_TRUE(f.WaitEntered(1));
  grpc::HealthCheckResponse resp;
  // Queued behind Block: it times out, since only Block's own release ends it.
  Status st = c->Call("t.T", "Release", req, &resp, Deadline(std::chrono::milliseconds(300)));
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded) << st.ToString();
  f.Release();
  EXPECT_TRUE(blocked.get().ok());
}

TEST(TtrpcServerTest, TooManyInFlightIsRefusedNotQueued) {
  ServerFixture f(2);
  f.RegisterBlockAndRelease();
  f.Serve();
  auto c = f.Connect();
  ASSERT_TRUE(c);
  grpc::CheckRequest req;
  std::vector<std::future<Status>> blocked;
  for (int i = 0; i < 2; ++i) {
    blocked.push_back(std::async(std::launch::async, [&] {
      grpc::HealthCheckResponse r;
      return c->Call("t.T", "Block", req, &r, Deadline(std::chrono::seconds(20)));
    }));
  }
  ASSERT_TRUE(f.WaitEntered(2));
  grpc::HealthCheckResponse resp;
  EXPECT_EQ(c->Call("t.T", "Block", req, &resp, Deadline(std::chrono::seconds(5))).code(),
            Code::kResourceExhausted);
  f.Release();
  for (auto& b : blocked) EXPECT_TRUE(b.get().ok());
}

}  // namespace
}  // namespace vmf
