// AgentService methods, driven through a ChannelServer over a socketpair
// with real frames, running real processes on the host.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "agent.pb.h"
#include "health.pb.h"
#include "log.h"
#include "support/temp_sysfs.h"
#include "test_peer.h"

namespace vmf::agent {
namespace {

using std::chrono::milliseconds;
constexpr char kSvc[] = "grpc.AgentService";

int Code(const ::ttrpc::Response& r) { return r.has_status() ? r.status().code() : 0; }

class AgentServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLogEnabled(false); }
  void TearDown() override { SetLogEnabled(true); }

  ::ttrpc::Response Exec(TestPeer& peer, const std::string& id, const std::vector<std::string>& args) {
    grpc::ExecProcessRequest req;
    req.set_container_id("c1");
    req.set_exec_id(id);
    for (auto& a : args) req.mutable_process()->add_args(a);
    return peer.Call(kSvc, "ExecProcess", req);
  }

  // One read; data in *out; returns the status code.
  int Read(TestPeer& peer, const std::string& id, bool err, std::string* out, uint32_t len = 0) {
    grpc::ReadStreamRequest req;
    req.set_container_id("c1");
    req.set_exec_id(id);
    req.set_len(len);
    ::ttrpc::Response r = peer.Call(kSvc, err ? "ReadStderr" : "ReadStdout", req);
    grpc::ReadStreamResponse resp;
    if (Code(r) == 0 && !resp.ParseFromString(r.payload())) return -3;
    *out = resp.data();
    return Code(r);
  }

  // Reads until the empty (EOF) reply.
  std::string ReadAll(TestPeer& peer, const std::string& id, bool err) {
    std::string all, chunk;
    while (true) {
      int code = Read(peer, id, err, &chunk);
      EXPECT_EQ(code, 0);
      if (code != 0 || chunk.empty()) return all;
      all += chunk;
    }
  }

  int Wait(TestPeer& peer, const std::string& id) {
    grpc::WaitProcessRequest req;
    req.set_container_id("c1");
    req.set_exec_id(id);
    ::ttrpc::Response r = peer.Call(kSvc, "WaitProcess", req);
    EXPECT_EQ(Code(r), 0) << r.status().message();
    grpc::WaitProcessResponse resp;
    EXPECT_TRUE(resp.ParseFromString(r.payload()));
    return resp.status();
  }
};

TEST_F(AgentServiceTest, ExecSeparateOutputsAndExitCode) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "e1", {"sh", "-c", "echo out; echo err >&2; exit 3"})), 0);
  EXPECT_EQ(ReadAll(peer, "e1", false), "out\n");
  EXPECT_EQ(ReadAll(peer, "e1", true), "err\n");
  EXPECT_EQ(Wait(peer, "e1"), 3);
  peer.Drive(milliseconds(10));
  EXPECT_EQ(peer.service().process_count(), 0u);  // forgotten: the id is free again
  ASSERT_EQ(Code(Exec(peer, "e1", {"true"})), 0);
  EXPECT_EQ(Wait(peer, "e1"), 0);
}

TEST_F(AgentServiceTest, DeferredReadAnsweredWhenDataArrives) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "late", {"sh", "-c", "sleep 0.2; echo late"})), 0);
  grpc::ReadStreamRequest req;
  req.set_container_id("c1");
  req.set_exec_id("late");
  req.set_len(100);
  uint32_t id = peer.NextId();
  peer.SendRequest(id, kSvc, "ReadStdout", req);
  peer.Drive(milliseconds(50));
  EXPECT_FALSE(peer.HasFrame(id));
  auto r = peer.WaitResponse(id);
  ASSERT_TRUE(r);
  grpc::ReadStreamResponse data;
  ASSERT_TRUE(data.ParseFromString(r->payload()));
  EXPECT_EQ(data.data(), "late\n");
  EXPECT_EQ(Wait(peer, "late"), 0);
}

TEST_F(AgentServiceTest, StdinRoundTripWithCat) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "cat", {"cat"})), 0);
  grpc::WriteStreamRequest w;
  w.set_container_id("c1");
  w.set_exec_id("cat");
  w.set_data("hello agent\n");
  ::ttrpc::Response r = peer.Call(kSvc, "WriteStdin", w);
  ASSERT_EQ(Code(r), 0);
  grpc::WriteStreamResponse wr;
  ASSERT_TRUE(wr.ParseFromString(r.payload()));
  EXPECT_EQ(wr.len(), 12u);
  std::string got;
  ASSERT_EQ(Read(peer, "cat", false, &got), 0);
  EXPECT_EQ(got, "hello agent\n");
  grpc::CloseStdinRequest c;
  c.set_container_id("c1");
  c.set_exec_id("cat");
  ASSERT_EQ(Code(peer.Call(kSvc, "CloseStdin", c)), 0);
  EXPECT_EQ(ReadAll(peer, "cat", false), "");
  EXPECT_EQ(Wait(peer, "cat"), 0);
  // Writing after close is refused.
  ASSERT_EQ(Code(Exec(peer, "cat2", {"cat"})), 0);
  c.set_exec_id("cat2");
  ASSERT_EQ(Code(peer.Call(kSvc, "CloseStdin", c)), 0);
  w.set_exec_id("cat2");
  EXPECT_EQ(Code(peer.Call(kSvc, "WriteStdin", w)), 9);
}

TEST_F(AgentServiceTest, LargeStdinAndOutputThroughCat) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "cat", {"cat"})), 0);
  std::string input;
  for (int i = 0; input.size() < (3u << 20); ++i) input += std::to_string(i) + ",";
  std::string output;
  size_t sent = 0;
  bool closed = false;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < end) {
    if (sent < input.size()) {
      grpc::WriteStreamRequest w;
      w.set_container_id("c1");
      w.set_exec_id("cat");
      w.set_data(input.substr(sent, 512 * 1024));
      ::ttrpc::Response r = peer.Call(kSvc, "WriteStdin", w);
      ASSERT_EQ(Code(r), 0);
      grpc::WriteStreamResponse wr;
      ASSERT_TRUE(wr.ParseFromString(r.payload()));
      sent += wr.len();
    } else if (!closed) {
      grpc::CloseStdinRequest c;
      c.set_container_id("c1");
      c.set_exec_id("cat");
      ASSERT_EQ(Code(peer.Call(kSvc, "CloseStdin", c)), 0);
      closed = true;
    }
    std::string chunk;
    ASSERT_EQ(Read(peer, "cat", false, &chunk), 0);
    EXPECT_LE(chunk.size(), 1u << 20);
    if (chunk.empty()) break;
    output += chunk;
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(output.size(), input.size());
  EXPECT_TRUE(output == input);
  EXPECT_EQ(Wait(peer, "cat"), 0);
}

TEST_F(AgentServiceTest, MoreThanOneMebibyteOfOutputIntact) {
  char path[] = "/tmp/vmf_agent_test_XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string content;
  for (int i = 0; content.size() < 2500000; ++i) content += "line " + std::to_string(i) + "\n";
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "big", {"cat", path})), 0);
  peer.Drive(milliseconds(100));  // the 1 MiB buffer fills; the pipe is then left alone
  std::string got = ReadAll(peer, "big", false);
  ::unlink(path);
  EXPECT_EQ(got.size(), content.size());
  EXPECT_TRUE(got == content);
  EXPECT_EQ(Wait(peer, "big"), 0);
}

TEST_F(AgentServiceTest, ExecErrors) {
  TestPeer peer;
  ::ttrpc::Response r = Exec(peer, "nf", {"no-such-command-vmf"});
  EXPECT_EQ(Code(r), 5) << r.status().message();
  r = Exec(peer, "nf2", {"/no/such/path"});
  EXPECT_EQ(Code(r), 5);
  EXPECT_EQ(peer.service().process_count(), 0u);
  EXPECT_EQ(Code(Exec(peer, "empty", {})), 3);

  grpc::ExecProcessRequest rl;
  rl.set_container_id("c1");
  rl.set_exec_id("rl");
  rl.mutable_process()->add_args("true");
  rl.mutable_process()->add_rlimits()->set_type("RLIMIT_NOPE");
  r = peer.Call(kSvc, "ExecProcess", rl);
  EXPECT_EQ(Code(r), 3);
  EXPECT_NE(r.status().message().find("RLIMIT_NOPE"), std::string::npos) << r.status().message();

  grpc::ExecProcessRequest cwd;
  cwd.set_container_id("c1");
  cwd.set_exec_id("cwd");
  cwd.mutable_process()->add_args("true");
  cwd.mutable_process()->set_cwd("/no/such/dir");
  EXPECT_EQ(Code(peer.Call(kSvc, "ExecProcess", cwd)), 5);

  ASSERT_EQ(Code(Exec(peer, "dup", {"sleep", "5"})), 0);
  EXPECT_EQ(Code(Exec(peer, "dup", {"true"})), 6);
}

TEST_F(AgentServiceTest, ExecWithATerminal) {
  TestPeer peer;
  grpc::ExecProcessRequest req;
  req.set_container_id("c1");
  req.set_exec_id("t");
  req.mutable_process()->set_terminal(true);
  req.mutable_process()->mutable_consolesize()->set_height(24);
  req.mutable_process()->mutable_consolesize()->set_width(80);
  for (const char* a :
       {"sh", "-c", "test -t 0 && test -t 1 && test -t 2 && echo tty; stty size; echo err >&2"})
    req.mutable_process()->add_args(a);
  ::ttrpc::Response r = peer.Call(kSvc, "ExecProcess", req);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  EXPECT_EQ(ReadAll(peer, "t", true), "");  // one stream: stderr is on the terminal too
  EXPECT_EQ(ReadAll(peer, "t", false), "tty\r\n24 80\r\nerr\r\n");
  EXPECT_EQ(Wait(peer, "t"), 0);
}

TEST_F(AgentServiceTest, EnvCwdAndDefaults) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "env", {"sh", "-c", "echo $PATH $HOME; pwd"})), 0);
  EXPECT_EQ(ReadAll(peer, "env", false), "/usr/sbin:/usr/bin:/sbin:/bin /root\n/\n");
  grpc::ExecProcessRequest req;
  req.set_container_id("c1");
  req.set_exec_id("env2");
  req.mutable_process()->add_args("sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args("echo $FOO; pwd; trap");
  req.mutable_process()->add_env("FOO=bar");
  req.mutable_process()->add_env("PATH=/bin:/usr/bin");
  req.mutable_process()->set_cwd("/tmp");
  ASSERT_EQ(Code(peer.Call(kSvc, "ExecProcess", req)), 0);
  EXPECT_EQ(ReadAll(peer, "env2", false), "bar\n/tmp\n");  // no traps: SIGPIPE reset to default
}

TEST_F(AgentServiceTest, SignalAndUnknownProcess) {
  TestPeer peer;
  ASSERT_EQ(Code(Exec(peer, "sleep", {"sleep", "30"})), 0);
  grpc::SignalProcessRequest s;
  s.set_container_id("c1");
  s.set_exec_id("sleep");
  s.set_signal(15);
  ASSERT_EQ(Code(peer.Call(kSvc, "SignalProcess", s)), 0);
  EXPECT_EQ(Wait(peer, "sleep"), 128 + 15);

  s.set_exec_id("nope");
  EXPECT_EQ(Code(peer.Call(kSvc, "SignalProcess", s)), 5);
  grpc::WaitProcessRequest w;
  w.set_container_id("c1");
  w.set_exec_id("nope");
  EXPECT_EQ(Code(peer.Call(kSvc, "WaitProcess", w)), 5);
  std::string data;
  EXPECT_EQ(Read(peer, "nope", false, &data), 5);
  EXPECT_EQ(Read(peer, "nope", true, &data), 5);
}

TEST_F(AgentServiceTest, ProcessLimit) {
  ChannelServer::Options opt;
  opt.service.max_processes = 2;
  TestPeer peer(opt);
  ASSERT_EQ(Code(Exec(peer, "a", {"sleep", "5"})), 0);
  ASSERT_EQ(Code(Exec(peer, "b", {"sleep", "5"})), 0);
  EXPECT_EQ(Code(Exec(peer, "c", {"sleep", "5"})), 8);
}

TEST_F(AgentServiceTest, OnlineCpuMemAndGuestDetails) {
  ::vmf::testing::TempSysfs sys;
  for (std::string cpu : {"cpu0", "cpu1", "cpu2"}) sys.Mkdir("devices/system/cpu/" + cpu);
  sys.Write("devices/system/cpu/cpu1/online", "0\n");
  sys.Write("devices/system/cpu/cpu2/online", "0\n");
  sys.Mkdir("devices/system/memory/memory0");
  sys.Mkdir("devices/system/memory/memory1");
  sys.Write("devices/system/memory/memory0/state", "online\n");
  sys.Write("devices/system/memory/memory1/state", "offline\n");
  sys.Write("devices/system/memory/block_size_bytes", "8000000\n");

  ChannelServer::Options opt;
  opt.service.sysfs_root = sys.root();
  TestPeer peer(opt);
  grpc::OnlineCPUMemRequest on;
  on.set_nb_cpus(1);
  ASSERT_EQ(Code(peer.Call(kSvc, "OnlineCPUMem", on)), 0);
  EXPECT_EQ(sys.Read("devices/system/cpu/cpu1/online")[0], '1');
  EXPECT_EQ(sys.Read("devices/system/cpu/cpu2/online")[0], '0');
  EXPECT_EQ(sys.Read("devices/system/memory/memory1/state").substr(0, 6), "online");

  on.set_nb_cpus(3);
  on.set_wait(true);
  on.set_cpu_only(true);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Code(peer.Call(kSvc, "OnlineCPUMem", on)), 4);  // only one more CPU to online
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2600));
  EXPECT_EQ(sys.Read("devices/system/cpu/cpu2/online")[0], '1');

  grpc::GuestDetailsRequest d;
  d.set_mem_block_size(true);
  ::ttrpc::Response r = peer.Call(kSvc, "GetGuestDetails", d);
  ASSERT_EQ(Code(r), 0);
  grpc::GuestDetailsResponse details;
  ASSERT_TRUE(details.ParseFromString(r.payload()));
  EXPECT_EQ(details.mem_block_size_bytes(), 0x8000000u);
  EXPECT_FALSE(details.support_mem_hotplug_probe());
  EXPECT_EQ(details.agent_details().version(), VMF_VERSION);
  EXPECT_FALSE(details.agent_details().init_daemon());
  sys.Write("devices/system/memory/probe", "");
  r = peer.Call(kSvc, "GetGuestDetails", d);
  ASSERT_TRUE(details.ParseFromString(r.payload()));
  EXPECT_TRUE(details.support_mem_hotplug_probe());
}

TEST_F(AgentServiceTest, ArgumentValidation) {
  TestPeer peer;
  EXPECT_EQ(Code(peer.Call(kSvc, "ReseedRandomDev", grpc::ReseedRandomDevRequest())), 3);
  grpc::CreateSandboxRequest sb;
  sb.set_hostname(std::string(65, 'h'));
  EXPECT_EQ(Code(peer.Call(kSvc, "CreateSandbox", sb)), 3);
  EXPECT_EQ(Code(peer.Call(kSvc, "CreateSandbox", grpc::CreateSandboxRequest())), 0);
  EXPECT_EQ(Code(peer.Call(kSvc, "DestroySandbox", grpc::DestroySandboxRequest())), 0);
  grpc::SetGuestDateTimeRequest t;
  t.set_sec(1);
  t.set_usec(2000000);
  EXPECT_EQ(Code(peer.Call(kSvc, "SetGuestDateTime", t)), 3);
}

TEST_F(AgentServiceTest, ReseedOnANonRandomDeviceFails) {
  ChannelServer::Options opt;
  opt.service.random_device = "/dev/null";
  TestPeer peer(opt);
  grpc::ReseedRandomDevRequest req;
  req.set_data("0123456789abcdef");
  ::ttrpc::Response r = peer.Call(kSvc, "ReseedRandomDev", req);
  EXPECT_NE(Code(r), 0);
  EXPECT_NE(r.status().message().find("RNDADDENTROPY"), std::string::npos);
}

}  // namespace
}  // namespace vmf::agent
