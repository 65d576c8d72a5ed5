// containerd-shim-vmfactory-v2 under a real (private) containerd, driven
// with ctr, on an image built offline: each container in a factory VM
// (a clone of the shared template), with its own rootfs disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/census.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/procfs.h"
#include "helpers.h"
#include "support/containerd_env.h"
#include "support/oci_image.h"

namespace vmf::testing {
namespace {

using namespace std::chrono_literals;
constexpr char kRuntime[] = "io.containerd.vmfactory.v2";

std::string ShimRuntimeDir() { return TestRuntimeDir() + "-shim"; }

// The value of `name` in `ctr tasks metrics` output ("NAME   VALUE" lines); -1 if absent.
long long MetricValue(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    long long v = -1;
    if (fields >> key >> v && key == name) return v;
  }
  return -1;
}

class ShimTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    if (FindProgram("containerd").empty() || FindProgram("ctr").empty() || FindProgram("mkfs.ext4").empty())
      return;
    // The shim's config: the test's guest image and template, a runtime dir
    // of its own (to count what is left), no daemon.
    config_path_ = new std::string(WriteShimConfig(ShimRuntimeDir()));
    ::setenv("VMF_CONFIG", config_path_->c_str(), 1);  // containerd passes it to its shims
    auto ctrd = test::PrivateContainerd::Start(VMF_DEFAULT_BIN_DIR, 60s);
    if (!ctrd.ok()) {
      start_error_ = new std::string(ctrd.status().ToString());
      return;
    }
    ctrd_ = ctrd->release();
    Status st = test::BuildBusyboxImage(ctrd_->dir() + "/image.tar", test::kTestImageRef);
    if (st.ok()) st = ctrd_->ImportImage(ctrd_->dir() + "/image.tar");
    if (!st.ok()) start_error_ = new std::string(st.ToString());
  }
  static void TearDownTestSuite() {
    delete ctrd_;
    ctrd_ = nullptr;
    ::unsetenv("VMF_CONFIG");
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (start_error_) FAIL() << *start_error_;
    if (!ctrd_) GTEST_SKIP() << "containerd, ctr or mkfs.ext4 is not installed";
  }
  // ctr run --rm with our runtime.
  test::CtrResult Run(const std::string& id, const std::vector<std::string>& cmd,
                      const std::string& stdin_data = "", std::chrono::milliseconds eof_delay = 0ms) {
    std::vector<std::string> args = {"--rm", "--runtime", kRuntime, test::kTestImageRef, id};
    args.insert(args.end(), cmd.begin(), cmd.end());
    auto r = ctrd_->Ctr(ctrd_->RunArgs(args), 180s, stdin_data, eof_delay);
    EXPECT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctrd_->log();
    return r.ok() ? *r : test::CtrResult{};
  }
  // Polls `ctr tasks ls` until a task is STOPPED (true) or the time is up;
  // *out: the last listing, or why there was none.
  bool WaitTaskStopped(std::chrono::seconds limit, std::string* out) {
    Deadline d(limit);
    do {
      auto ls = ctrd_->Ctr({"tasks", "ls"}, 30s);
      *out = ls.ok() ? ls->out : ls.status().ToString();
      if (out->find("STOPPED") != std::string::npos) return true;
      std::this_thread::sleep_for(100ms);
    } while (!d.expired());
    return false;
  }
  // Nothing of a finished container is left: no shim, no VM process, no VM
  // dir, no rootfs image.
  void ExpectNothingLeft() {
    bool clean = false;
    for (int i = 0; i < 100 && !clean; ++i) {
      clean = test::ProcessesNamed("containerd-shim-vmfactory-v2").empty() &&
              CountProcessesMentioning(ShimRuntimeDir() + "/vm/") == 0;
      if (!clean) std::this_thread::sleep_for(100ms);
    }
    EXPECT_TRUE(test::ProcessesNamed("containerd-shim-vmfactory-v2").empty());
    EXPECT_EQ(CountProcessesMentioning(ShimRuntimeDir() + "/vm/"), 0);
    EXPECT_EQ(CountVmDirsIn(ShimRuntimeDir()), 0);
    // Nor its socket.
    std::error_code ec;
    int sockets = 0;
    for (auto it = std::filesystem::directory_iterator(ShimRuntimeDir() + "/shim", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it) {
      ++sockets;
    }
    EXPECT_EQ(sockets, 0) << "shim sockets left in " << ShimRuntimeDir() << "/shim";
  }

  static test::PrivateContainerd* ctrd_;
  static std::string* start_error_;
  static std::string* config_path_;
};
test::PrivateContainerd* ShimTest::ctrd_ = nullptr;
std::string* ShimTest::start_error_ = nullptr;
std::string* ShimTest::config_path_ = nullptr;

TEST_F(ShimTest, RunsTheImageInAVmAndPassesTheExitStatusThrough) {
  auto guest_kernel = ReadFile(std::string(VMF_BUILD_DIR) + "/guest/kernel-version");
  ASSERT_TRUE(guest_kernel.ok());
  std::string kernel = *guest_kernel;
  while (!kernel.empty() && kernel.back() == '\n') kernel.pop_back();
  auto r = Run("uname1", {"uname", "-r"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, kernel + "\n") << r.Describe();

  r = Run("marker1", {"cat", "/etc/vmf-image-marker"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, test::kImageMarkerContents) << r.Describe();

  // The VM's loopback is up: a server on 127.0.0.1 answers in the container.
  r = Run("loop1", {"sh", "-c", "(echo pong | nc -l -p 7777 &) ; sleep 0.5; nc 127.0.0.1 7777 </dev/null"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "pong\n") << r.Describe();

  r = Run("exit7", {"sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
  EXPECT_EQ(r.out, "out\n") << r.Describe();
  EXPECT_EQ(r.err, "err\n") << r.Describe();
  ExpectNothingLeft();
}

TEST_F(ShimTest, StdinReachesTheContainerAndItsEofEndsIt) {
  auto r = Run("cat1", {"cat"}, "hello from the host\n", 8000ms);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "hello from the host\n") << r.Describe();
  ExpectNothingLeft();
}

TEST_F(ShimTest, WritesStayInTheirContainer) {
  auto r = Run("writer1", {"sh", "-c", "echo mine > /etc/written && cat /etc/written && hostname"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out.substr(0, 5), "mine\n") << r.Describe();
  r = Run("reader1", {"cat", "/etc/written"});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.Describe();
  ExpectNothingLeft();
}

// Host paths bound into the container arrive as copies: read-only binds
// stay read-only; what the container writes to a read-write bind reaches
// the host when it ends (symlinks as symlinks, removals too).
TEST_F(ShimTest, HostBindMountsAreCopiedInAndReadWriteOnesBack) {
  const std::string dir = ShimRuntimeDir() + "/bind-src";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/hello") << "from the host\n";
  const std::string file = ShimRuntimeDir() + "/bind-file";
  std::ofstream(file) << "one file\n";
  const std::string rw = ShimRuntimeDir() + "/bind-rw";
  std::filesystem::remove_all(rw);
  std::filesystem::create_directories(rw);
  std::ofstream(rw + "/keep") << "kept\n";
  std::ofstream(rw + "/remove") << "to be removed\n";
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs(
          {"--rm", "--runtime", kRuntime, "--mount", "type=bind,src=" + dir + ",dst=/data,options=rbind:ro",
           "--mount", "type=bind,src=" + file + ",dst=/etc/one,options=rbind:rw", "--mount",
           "type=bind,src=" + rw + ",dst=/rw,options=rbind:rw", test::kTestImageRef, "binds1", "sh", "-c",
           "cat /data/hello /etc/one; echo x > /data/new && echo wrote-ro; echo changed > /etc/one; "
           "cat /etc/one; echo made > /rw/new; rm /rw/remove; mkdir /rw/sub; echo deep > /rw/sub/f; "
           "ln -s /etc/shadow /rw/evil"}),
      180s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "from the host\none file\nchanged\n") << r->Describe();
  EXPECT_NE(r->err.find("Read-only file system"), std::string::npos) << r->Describe();
  EXPECT_FALSE(std::filesystem::exists(dir + "/new"));
  EXPECT_EQ(*ReadFile(file), "changed\n") << "a read-write file bind is copied back";
  EXPECT_EQ(*ReadFile(rw + "/keep"), "kept\n");
  EXPECT_EQ(*ReadFile(rw + "/new"), "made\n");
  EXPECT_EQ(*ReadFile(rw + "/sub/f"), "deep\n");
  EXPECT_FALSE(std::filesystem::exists(rw + "/remove"));
  ASSERT_TRUE(std::filesystem::is_symlink(std::filesystem::symlink_status(rw + "/evil")));
  EXPECT_EQ(std::filesystem::read_symlink(rw + "/evil"), "/etc/shadow");
  ExpectNothingLeft();
}

TEST_F(ShimTest, DetachedTaskTakesExecKillAndDelete) {
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"-d", "--runtime", kRuntime, test::kTestImageRef, "det1", "sleep", "1000"}), 180s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->exit_code, 0) << r->Describe() << ctrd_->log();
  auto e = ctrd_->Ctr(ctrd_->ExecArgs({"--exec-id", "e1", "det1", "cat", "/etc/vmf-image-marker"}), 120s);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->exit_code, 0) << e->Describe();
  EXPECT_EQ(e->out, test::kImageMarkerContents) << e->Describe();
  auto ls = ctrd_->Ctr({"tasks", "ls"}, 30s);
  ASSERT_TRUE(ls.ok());
  EXPECT_NE(ls->out.find("RUNNING"), std::string::npos) << ls->Describe();
  // Stats: cgroups v1 Metrics from the container's cgroup in the guest,
  // which ctr decodes and prints.
  auto m = ctrd_->Ctr({"tasks", "metrics", "det1"}, 30s);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->exit_code, 0) << m->Describe();
  EXPECT_GT(MetricValue(m->out, "memory.usage_in_bytes"), 0) << m->Describe();
  EXPECT_GT(MetricValue(m->out, "cpuacct.usage"), 0) << m->Describe();
  EXPECT_EQ(MetricValue(m->out, "pids.current"), 1) << m->Describe();  // sleep
  auto k = ctrd_->Ctr({"tasks", "kill", "-s", "SIGKILL", "det1"}, 30s);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->exit_code, 0) << k->Describe();
  std::string out;
  EXPECT_TRUE(WaitTaskStopped(10s, &out)) << out;
  auto d = ctrd_->Ctr({"tasks", "delete", "det1"}, 60s);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->exit_code, 0) << d->Describe();
  auto cd = ctrd_->Ctr({"containers", "delete", "det1"}, 60s);
  ASSERT_TRUE(cd.ok());
  ExpectNothingLeft();
}

TEST_F(ShimTest, AMissingExecutableIsAClearErrorAndLeavesNothing) {
  auto r = Run("nosuch1", {"/no/such/program"});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.err.find("/no/such/program"), std::string::npos) << r.Describe();
  // The container record goes too (ctr run --rm only removes it on success).
  (void)ctrd_->Ctr({"containers", "delete", "nosuch1"}, 60s);
  ExpectNothingLeft();
}

TEST_F(ShimTest, AVmThatDiesEndsItsTaskAndLeavesNothing) {
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"-d", "--runtime", kRuntime, test::kTestImageRef, "dies1", "sleep", "1000"}), 180s);
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->Describe() : r.status().ToString());
  pid_t qemu = FindProcessMentioningAll({ShimRuntimeDir() + "/vm/", "qemu-system"});
  ASSERT_GT(qemu, 0);
  ::kill(qemu, SIGKILL);
  std::string out;
  EXPECT_TRUE(WaitTaskStopped(10s, &out)) << out;
  auto d = ctrd_->Ctr({"tasks", "delete", "dies1"}, 60s);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->exit_code, 0) << d->Describe();
  (void)ctrd_->Ctr({"containers", "delete", "dies1"}, 60s);
  ExpectNothingLeft();
}

// A guest that stops answering (its QEMU stopped, as a hung or malicious
// guest would look) is ended after agent.health_timeout: the task stops, and
// its delete leaves nothing.
TEST_F(ShimTest, AGuestThatStopsAnsweringEndsItsTaskAndLeavesNothing) {
  const std::string config = WriteShimConfig(ShimRuntimeDir(), "silent.toml", "health_timeout = 3");
  auto r = ctrd_->Ctr(ctrd_->RunArgs({"-d", "--runtime", kRuntime, "--runtime-config-path", config,
                                      test::kTestImageRef, "silent1", "sleep", "1000"}),
                      180s);
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->Describe() : r.status().ToString());
  pid_t qemu = FindProcessMentioningAll({ShimRuntimeDir() + "/vm/", "qemu-system"});
  ASSERT_GT(qemu, 0);
  ASSERT_EQ(::kill(qemu, SIGSTOP), 0);
  std::string out;
  const bool stopped = WaitTaskStopped(60s, &out);
  EXPECT_TRUE(stopped) << out << ctrd_->log();
  if (!stopped) ::kill(qemu, SIGKILL);
  auto d = ctrd_->Ctr({"tasks", "delete", "silent1"}, 60s);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->exit_code, 0) << d->Describe();
  (void)ctrd_->Ctr({"containers", "delete", "silent1"}, 60s);
  ExpectNothingLeft();
}

// A container over its memory limit: the guest kernel's OOM killer ends
// the process (137, as with runc) and containerd gets a TaskOOM event.
TEST_F(ShimTest, AContainerOverItsMemoryLimitIsOomKilledAndContainerdIsTold) {
  const std::string events_file = ShimRuntimeDir() + "/oom-events.txt";
  UniqueFd events_out(::open(events_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(events_out.valid());
  SpawnOptions so;
  so.stdout_fd = events_out.get();
  auto events = ChildProcess::Spawn(ctrd_->CtrArgv({"events"}), so);
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  std::this_thread::sleep_for(300ms);  // subscribed before the container runs
  // dd's 64 MiB buffer does not fit in 32 MiB.
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"--rm", "--runtime", kRuntime, "--memory-limit", "33554432", test::kTestImageRef,
                      "oom1", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}),
      180s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 137) << r->Describe();
  std::string seen;
  for (int i = 0; i < 100; ++i) {
    if (auto f = ReadFile(events_file); f.ok()) seen = *f;
    if (seen.find("/tasks/oom") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(seen.find("/tasks/oom"), std::string::npos) << seen << ctrd_->log();
  EXPECT_NE(seen.find("oom1"), std::string::npos) << seen;
  events->Signal(SIGKILL);
  (void)events->Wait(Deadline(10s));
  ::unlink(events_file.c_str());
  (void)ctrd_->Ctr({"containers", "delete", "oom1"}, 60s);
  ExpectNothingLeft();
}

// `ctr run -t`: the container's shell on a terminal (ctr's own stdio is a
// pty here), with the window size ctr sets and the shell's exit status.
TEST_F(ShimTest, CtrRunTGivesTheContainerATerminal) {
  UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(master.valid());
  ASSERT_EQ(::grantpt(master.get()), 0);
  ASSERT_EQ(::unlockpt(master.get()), 0);
  struct winsize ws = {};
  ws.ws_row = 31;
  ws.ws_col = 97;
  ASSERT_EQ(::ioctl(master.get(), TIOCSWINSZ, &ws), 0);
  UniqueFd slave(::open(::ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(slave.valid());
  SpawnOptions so;
  so.stdin_fd = so.stdout_fd = so.stderr_fd = slave.get();
  auto ctr = ChildProcess::Spawn(ctrd_->CtrArgv(ctrd_->RunArgs({"--rm", "-t", "--runtime", kRuntime,
                                                                test::kTestImageRef, "tty1", "sh"})),
                                 so);
  ASSERT_TRUE(ctr.ok()) << ctr.status().ToString();
  slave.reset();
  // Reads what the terminal shows until `want` appears, ctr is gone (EIO)
  // or the time is up.
  std::string screen;
  auto read_until = [&](const std::string& want, std::chrono::seconds limit) {
    Deadline d(limit);
    while (screen.find(want) == std::string::npos && !d.expired()) {
      pollfd p{master.get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(master.get(), buf, sizeof(buf));
      if (n <= 0) break;
      screen.append(buf, static_cast<size_t>(n));
    }
    return screen.find(want) != std::string::npos;
  };
  EXPECT_TRUE(read_until("# ", 180s)) << screen << ctrd_->log();  // the shell's prompt
  const std::string cmds = "stty size; tty; echo $((6*7))x; exit 3\r";
  ASSERT_EQ(::write(master.get(), cmds.data(), cmds.size()), static_cast<ssize_t>(cmds.size()));
  EXPECT_TRUE(read_until("42x", 60s)) << screen;
  EXPECT_NE(screen.find("31 97"), std::string::npos) << screen;
  EXPECT_NE(screen.find("/dev/pts/"), std::string::npos) << screen;
  auto code = ctr->Wait(Deadline(60s));
  ASSERT_TRUE(code.ok()) << code.status().ToString() << screen;
  EXPECT_TRUE(WIFEXITED(*code) && WEXITSTATUS(*code) == 3) << *code << " " << screen;
  (void)ctrd_->Ctr({"containers", "delete", "tty1"}, 60s);
  ExpectNothingLeft();
}

TEST_F(ShimTest, AKilledShimIsCleanedUpByDelete) {
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"-d", "--runtime", kRuntime, test::kTestImageRef, "orphan1", "sleep", "1000"}), 180s);
  ASSERT_TRUE(r.ok() && r->exit_code == 0) << (r.ok() ? r->Describe() : r.status().ToString());
  auto shims = test::ProcessesNamed("containerd-shim-vmfactory-v2");
  ASSERT_EQ(shims.size(), 1u);
  ::kill(shims[0], SIGKILL);
  // containerd runs the shim's `delete`, which stops the VM the shim left.
  (void)ctrd_->Ctr({"tasks", "delete", "orphan1"}, 60s);
  (void)ctrd_->Ctr({"containers", "delete", "orphan1"}, 60s);
  ExpectNothingLeft();
}

TEST_F(ShimTest, AnEmptyRootfsIsAClearError) {
  std::string empty = ShimRuntimeDir() + "/empty-rootfs";
  std::filesystem::create_directories(empty);
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"--rm", "--runtime", kRuntime, "--rootfs", empty, "empty1", "/bin/true"}), 180s);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0) << r->Describe();
  EXPECT_NE(r->err.find("empty"), std::string::npos) << r->Describe();
  (void)ctrd_->Ctr({"containers", "delete", "empty1"}, 60s);
  ExpectNothingLeft();
}

// A rootfs that is not there, and a spec the shim cannot serve (no
// process args): each a clear error from `ctr run`, and nothing left.
TEST_F(ShimTest, AMissingRootfsAndABadSpecAreClearErrorsAndLeaveNothing) {
  const std::string missing = ShimRuntimeDir() + "/no-such-rootfs";
  auto r = ctrd_->Ctr(
      ctrd_->RunArgs({"--rm", "--runtime", kRuntime, "--rootfs", missing, "missing1", "/bin/true"}), 180s);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0) << r->Describe();
  EXPECT_NE(r->err.find("no-such-rootfs"), std::string::npos) << r->Describe();
  (void)ctrd_->Ctr({"containers", "delete", "missing1"}, 60s);
  ExpectNothingLeft();

  const std::string spec = ShimRuntimeDir() + "/bad-spec.json";
  std::ofstream(spec) << R"({"ociVersion": "1.0.2", "process": {"args": [], "cwd": "/"},
                            "root": {"path": "rootfs"}, "linux": {}})";
  r = ctrd_->Ctr(ctrd_->RunArgs({"--rm", "--runtime", kRuntime, "--config", spec, "badspec1"}), 180s);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->exit_code, 0) << r->Describe();
  EXPECT_NE(r->err.find("args"), std::string::npos) << r->Describe();
  (void)ctrd_->Ctr({"containers", "delete", "badspec1"}, 60s);
  ExpectNothingLeft();
}

// The bench's container mode: runc against the shim from each source, and a
// pod's memory, all measured (numbers printed, not asserted).
TEST_F(ShimTest, TheBenchsContainerModeMeasuresEveryRuntime) {
  const std::string json = ShimRuntimeDir() + "/bench.json";
  std::vector<std::string> argv = {std::string(VMF_DEFAULT_BIN_DIR) + "/vmfactory",
                                   "bench",
                                   "--modes",
                                   "containers",
                                   "--iterations",
                                   "1",
                                   "--json",
                                   json};
  // A short runtime dir: the bench's daemon nests its VMs' sockets in it.
  const std::string runtime = "/tmp/vmf-b-" + std::to_string(::getpid());
  ::setenv("VMF_RUNTIME_DIR", runtime.c_str(), 1);
  std::filesystem::create_directories(runtime);
  auto r = test::RunCommand(argv, 600s);
  ::unsetenv("VMF_RUNTIME_DIR");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0) << r->Describe();
  auto text = ReadFile(json, 16 << 20);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto results = nlohmann::json::parse(*text, nullptr, false);
  ASSERT_TRUE(results.is_object() && results.contains("containers")) << *text;
  std::vector<std::string> runtimes;
  for (const auto& e : results["containers"].value("runtimes", nlohmann::json::array())) {
    EXPECT_FALSE(e.contains("error")) << e.dump();
    EXPECT_GT(e.value("ctr_run_ms", nlohmann::json::object()).value("p50", 0), 0) << e.dump();
    runtimes.push_back(e.value("runtime", ""));
  }
  EXPECT_EQ(runtimes, (std::vector<std::string>{"runc", "pool", "template", "cold"}));
  EXPECT_GT(results["containers"].value("pod_memory_kib", nlohmann::json::object()).value("shim_rss", 0), 0)
      << results["containers"].dump();
  EXPECT_NE(r->out.find("containers: `ctr run --rm IMAGE ID /bin/true`"), std::string::npos) << r->out;
  EXPECT_TRUE(test::ProcessesNamed("containerd-shim-vmfactory-v2").empty());
  EXPECT_EQ(CountProcessesMentioning(runtime), 0);
  std::error_code ec;
  std::filesystem::remove_all(runtime, ec);
}

}  // namespace
}  // namespace vmf::testing
