// A hostile guest agent (tests/hostile/hostile_agent.cc, chosen by
// vmf.hostile=MODE on the kernel command line), each mode next to a normal VM
// booted at the same time: the call it spoils fails with a clear error within
// a bounded time, the proxy's memory stays bounded, the hostile VM is
// quarantined (every later call fails at once, saying why; a stalled frame
// only resynchronises the channel), the normal VM keeps working before and
// after, and nothing is left once both are stopped.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "common/io.h"
#include "common/process.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr long kMaxProxyKib = 64 * 1024;  // the bound on the proxy's resident memory
constexpr auto kHostileCallTimeout = seconds(20);

VMConfig HostileConfig(const std::string& mode) {
  VMConfig c = TestConfig();
  c.hypervisor.initrd = VMF_HOSTILE_INITRD;
  c.hypervisor.kernel_params = "vmf.hostile=" + mode;
  c.agent.call_timeout = kHostileCallTimeout;
  return c;
}

long long Ms(Clock::duration d) { return std::chrono::duration_cast<milliseconds>(d).count(); }

// A "Key:   value" field of a /proc file, as a number (-1 if absent).
long long ProcField(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}
long long VmHwmKib(pid_t pid) { return ProcField("/proc/" + std::to_string(pid) + "/status", "VmHWM"); }
long long VmRssKib(pid_t pid) { return ProcField("/proc/" + std::to_string(pid) + "/status", "VmRSS"); }
// Bytes a process wrote with write() (the proxy: its log; sockets go through sendmsg).
long long BytesWritten(pid_t pid) { return ProcField("/proc/" + std::to_string(pid) + "/io", "wchar"); }
// User + system CPU time of a process, in ms.
long long CpuMs(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  return (utime + stime) * 1000 / ::sysconf(_SC_CLK_TCK);
}

long long FileSize(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<long long>(n);
}

class HostileAgentTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_ = CountOpenFds(); }

  // Boots the hostile VM and, at the same time, a normal one (which must come up).
  Result<std::unique_ptr<VM>> BootBeside(const std::string& mode) {
    auto normal = std::async(std::launch::async, [] { return VM::Create(TestConfig()); });
    auto start = Clock::now();
    auto hostile = VM::Create(HostileConfig(mode));
    hostile_boot_ = Clock::now() - start;
    auto n = normal.get();
    EXPECT_TRUE(n.ok()) << "the normal VM: " << n.status().ToString();
    if (n.ok()) normal_ = std::move(*n);
    return hostile;
  }

  void ExpectNormalVmWorks(const std::string& word) {
    ASSERT_TRUE(normal_) << "no normal VM";
    auto r = Exec(*normal_, {"echo", word});
    ASSERT_TRUE(r.ok()) << "the normal VM, " << word << ": " << r.status().ToString();
    EXPECT_EQ(r->out, word + "\n");
    EXPECT_EQ(r->exit_code, 0);
  }

  // A quarantined VM: every later call fails at once, with the reason, and
  // the proxy is still there to say so.
  void ExpectQuarantined(VM& vm) {
    auto start = Clock::now();
    Status check = vm.agent().Check(Deadline(seconds(10)));
    EXPECT_EQ(check.code(), Code::kDataLoss) << check.ToString();
    EXPECT_NE(check.message().find("quarantined"), std::string::npos) << check.ToString();
    ExecSpec spec;
    spec.exec_id = "after";
    spec.args = {"true"};
    Status exec = vm.agent().ExecProcess(spec);
    EXPECT_EQ(exec.code(), Code::kDataLoss) << exec.ToString();
    EXPECT_LT(Clock::now() - start, seconds(2)) << "later calls must fail at once";
    EXPECT_TRUE(ProcessAlive(vm.proxy_pid()));
  }

  void ExpectProxyMemoryBounded(pid_t proxy) {
    long long hwm = VmHwmKib(proxy);
    EXPECT_GT(hwm, 0);
    EXPECT_LT(hwm, kMaxProxyKib) << "proxy VmHWM " << hwm << " KiB";
  }

  void StopAllAndExpectNothingLeft(std::unique_ptr<VM> hostile) {
    if (hostile) {
      hostile->Stop();
    }
    hostile.reset();
    if (normal_) {
      normal_->Stop();
    }
    normal_.reset();
    EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
    EXPECT_EQ(CountVmDirs(), 0);
    EXPECT_EQ(CountOpenFds(), fds_);
  }

  // The modes that misbehave once the VM is up: GetGuestDetails is the call
  // they spoil. A protocol violation quarantines the VM; a stalled frame only
  // resynchronises the channel (a paused VM looks the same).
  enum class After { kQuarantined, kResynchronised };
  void ExpectCallSpoiledAndContained(const std::string& mode, Code want_code, const std::string& want_text,
                                     Clock::duration max_time, After after = After::kQuarantined) {
    auto hostile = BootBeside(mode);
    ASSERT_TRUE(hostile.ok()) << hostile.status().ToString();
    VM& vm = **hostile;
    ExpectNormalVmWorks("before");
    pid_t proxy = vm.proxy_pid();

    auto start = Clock::now();
    auto details = vm.agent().GetGuestDetails();
    auto took = Clock::now() - start;
    ASSERT_FALSE(details.ok()) << "a " << mode << " reply was accepted";
    const Status& st = details.status();
    EXPECT_EQ(st.code(), want_code) << st.ToString();
    EXPECT_NE(st.message().find(want_text), std::string::npos) << st.ToString();
    EXPECT_LT(took, max_time) << st.ToString();

    if (after == After::kQuarantined) {
      EXPECT_NE(st.message().find("protocol violation"), std::string::npos) << st.ToString();
      ExpectQuarantined(vm);
    } else {
      // The hostile agent answers Health.Check, and so the new sync: the
      // channel works again.
      Status check = vm.agent().Check(Deadline(seconds(10)));
      EXPECT_TRUE(check.ok()) << check.ToString();
    }
    ExpectProxyMemoryBounded(proxy);
    std::printf("[hostile %s] boot %lld ms; error after %lld ms: %s; proxy VmRSS %lld KiB, VmHWM %lld KiB\n",
                mode.c_str(), Ms(hostile_boot_), Ms(took), st.ToString().c_str(), VmRssKib(proxy),
                VmHwmKib(proxy));
    ExpectNormalVmWorks("after");
    StopAllAndExpectNothingLeft(std::move(*hostile));
  }

  std::unique_ptr<VM> normal_;
  Clock::duration hostile_boot_{};
  int fds_ = 0;
};

TEST_F(HostileAgentTest, GarbageInsteadOfAReply) {
  // 64 KiB of junk: whatever its first bytes announce, it is not a reply.
  ExpectCallSpoiledAndContained("garbage", Code::kDataLoss, "quarantined", seconds(5));
}

TEST_F(HostileAgentTest, OversizedLengthIsNotTrusted) {
  // A header announcing 4 GiB - 1 bytes: the call fails with RESOURCE_EXHAUSTED
  // at once, nothing of that size is allocated or waited for.
  ExpectCallSpoiledAndContained("oversized", Code::kResourceExhausted, "4294967295 bytes", seconds(5));
}

TEST_F(HostileAgentTest, HalfAFrameThenSilence) {
  // The proxy waits 5 s in the middle of a frame, not the call's 20 s, then
  // fails the call and synchronises the channel again.
  ExpectCallSpoiledAndContained("halfframe", Code::kUnavailable, "and then nothing for", seconds(12),
                                After::kResynchronised);
}

TEST_F(HostileAgentTest, ReplyForAStreamNeverOpened) {
  // A forged reply for a stream the host never opened, then the real reply:
  // the forgery is caught, and the channel is no longer trusted.
  ExpectCallSpoiledAndContained("unknownstream", Code::kDataLoss, "never opened", seconds(5));
}

TEST_F(HostileAgentTest, GarbageFromTheFirstByteFailsCreateAndLeavesNothing) {
  auto hostile = BootBeside("early");
  ASSERT_FALSE(hostile.ok()) << "a VM whose agent never answered the sync was created";
  const Status& st = hostile.status();
  EXPECT_EQ(st.code(), Code::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("without answering the sync request"), std::string::npos) << st.ToString();
  // A boot (~4 s under TCG, more when the machine is busy) plus 8 MiB of
  // junk, well before the 120 s boot timeout.
  EXPECT_LT(hostile_boot_, seconds(60));
  std::printf("[hostile early] VM::Create failed after %lld ms: %s\n", Ms(hostile_boot_),
              st.message().substr(0, st.message().find(';')).c_str());
  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir() + "/vm/"), 2) << "only the normal VM's QEMU and proxy";
  ExpectNormalVmWorks("after");
  StopAllAndExpectNothingLeft(nullptr);
}

TEST_F(HostileAgentTest, ConsoleFloodIsBoundedAndTheAgentKeepsServing) {
  // The agent serves normally while a child writes to the console as fast as
  // it can, from boot on.
  auto hostile = BootBeside("flood");
  ASSERT_TRUE(hostile.ok()) << hostile.status().ToString();
  VM& vm = **hostile;
  ExpectNormalVmWorks("before");
  const pid_t proxy = vm.proxy_pid();
  const std::string log = vm.dir() + "/console.log";
  const std::string rotated = vm.dir() + "/console.1.log";

  // After a 128 KiB burst the proxy reads the console at 16 KiB/s, and says so.
  auto throttled = [&] {
    auto text = ReadFile(log, 4 << 20);
    return text.ok() && text->find("the guest console writes faster than") != std::string::npos;
  };
  auto wait_start = Clock::now();
  while (!throttled() && Clock::now() - wait_start < seconds(30))
    std::this_thread::sleep_for(milliseconds(200));
  ASSERT_TRUE(throttled()) << "the flood never reached the console's rate limit";
  auto throttle_wait = Clock::now() - wait_start;

  // Measured while the flood goes on, throttled.
  auto start = Clock::now();
  long long logged0 = BytesWritten(proxy), cpu0 = CpuMs(proxy);
  long long max_rss = 0, max_log = 0, slowest_ms = 0;
  for (int i = 0; i < 4; ++i) {
    auto call = Clock::now();
    auto r = Exec(vm, {"echo", "served " + std::to_string(i)});
    slowest_ms = std::max(slowest_ms, Ms(Clock::now() - call));
    ASSERT_TRUE(r.ok()) << "the flooding VM's agent, call " << i << ": " << r.status().ToString();
    EXPECT_EQ(r->out, "served " + std::to_string(i) + "\n");
    ExpectNormalVmWorks("during" + std::to_string(i));
    max_rss = std::max(max_rss, VmRssKib(proxy));
    max_log = std::max({max_log, FileSize(log), FileSize(rotated)});
    std::this_thread::sleep_for(milliseconds(500));
  }
  auto elapsed = Clock::now() - start;
  long long logged = BytesWritten(proxy) - logged0, cpu = CpuMs(proxy) - cpu0;

  // The flood is real: it reached the proxy and its log.
  EXPECT_GT(logged, 32 * 1024) << "the proxy logged only " << logged << " bytes in " << Ms(elapsed) << " ms";
  auto tail = TailOfFile(log, 4096);
  EXPECT_NE(tail.find("vmf-hostile console flood"), std::string::npos) << tail;
  // Bounded: each of the two log files stays at its 1 MiB cap (plus a line),
  // and the proxy's memory stays small.
  EXPECT_LE(max_log, (1 << 20) + 8192);
  EXPECT_LE(FileSize(log) + FileSize(rotated), (2 << 20) + 16384);
  EXPECT_LT(max_rss, kMaxProxyKib);
  ExpectProxyMemoryBounded(proxy);
  // Throttled, the flood costs the proxy little CPU (about 20% unthrottled).
  EXPECT_LT(cpu, Ms(elapsed) / 5) << "proxy CPU " << cpu << " ms in " << Ms(elapsed) << " ms";
  // Not a protocol violation: the VM is not quarantined.
  EXPECT_TRUE(vm.agent().Check(Deadline(seconds(20))).ok());
  std::printf(
      "[hostile flood] boot %lld ms, throttled %lld ms later; then in %lld ms: proxy logged %lld KiB (%lld "
      "KiB/s), used %lld ms CPU; "
      "slowest exec %lld ms; logs %lld + %lld bytes (max file %lld); proxy VmRSS max %lld KiB, VmHWM %lld "
      "KiB\n",
      Ms(hostile_boot_), Ms(throttle_wait), Ms(elapsed), logged / 1024,
      logged * 1000 / 1024 / std::max<long long>(Ms(elapsed), 1), cpu, slowest_ms, FileSize(log),
      FileSize(rotated), max_log, max_rss, VmHwmKib(proxy));
  ExpectNormalVmWorks("after");
  StopAllAndExpectNothingLeft(std::move(*hostile));
}

}  // namespace
}  // namespace vmf::testing
