// `vmfactory serve` as another process uses it: the pool fills and refills,
// VMs are handed over and usable, dead pool VMs are replaced, orphaned VMs
// are stopped, SIGTERM leaves nothing, metrics parse.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include "common/census.h"
#include "common/cgroup.h"
#include "common/io.h"
#include "common/process.h"
#include "daemon/client.h"
#include "helpers.h"
#include "support/wait_until.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

std::string Bin() { return std::string(VMF_DEFAULT_BIN_DIR) + "/vmfactory"; }

// Runs the CLI with the daemon's runtime dir; returns (status, stdout).
// Its stderr goes to err_file if given.
// Spawns argv with VMF_RUNTIME_DIR=runtime in its environment. Tests start
// clients from several threads at once: without the lock, one thread's
// unsetenv lands before another's spawn, and that child looks for the
// daemon in the wrong place.
Result<ChildProcess> SpawnWithRuntimeDir(const std::vector<std::string>& argv, const SpawnOptions& o,
                                         const std::string& runtime) {
  static std::mutex env_mu;
  std::lock_guard lock(env_mu);
  ::setenv("VMF_RUNTIME_DIR", runtime.c_str(), 1);
  auto child = ChildProcess::Spawn(argv, o);
  ::unsetenv("VMF_RUNTIME_DIR");
  return child;
}

std::pair<int, std::string> Cli(const std::string& runtime, const std::vector<std::string>& args,
                                const std::string& err_file = "") {
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  std::vector<std::string> argv = {Bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions o;
  o.stdout_fd = w.get();
  UniqueFd err;
  if (!err_file.empty()) {
    err = UniqueFd(::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    o.stderr_fd = err.get();
  }
  auto child = SpawnWithRuntimeDir(argv, o, runtime);
  if (!child.ok()) return {-1, ""};
  w.reset();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  auto st = child->Wait(Deadline(std::chrono::seconds(120)));
  return {st.ok() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1, out};
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime_ = TestRuntimeDir() + "-daemon";
    fs::create_directories(runtime_);
    socket_ = runtime_ + "/daemon.sock";
    port_ = 20000 + ::getpid() % 20000;
    Start(start_extra_, start_cache_);
  }
  void TearDown() override {
    Stop();
    EXPECT_EQ(CountProcessesMentioning(PoolVmDir()), 0) << "QEMU or proxies left";
    EXPECT_FALSE(fs::exists(socket_)) << "socket left";
    std::error_code ec;
    fs::remove_all(runtime_, ec);
  }
  void Start(const std::vector<std::string>& extra = {}, const std::string& cache = "2") {
    std::vector<std::string> argv = {Bin(),
                                     "--template-path",
                                     SharedTemplate().root,
                                     "serve",
                                     "--cache",
                                     cache,
                                     "--metrics",
                                     "127.0.0.1:" + std::to_string(port_)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    log_ =
        UniqueFd(::open((runtime_ + "/serve.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    SpawnOptions o;
    o.stderr_fd = log_.get();
    auto d = SpawnWithRuntimeDir(argv, o, runtime_);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(*d);
  }
  void Stop() {
    daemon_.Signal(SIGTERM);
    auto st = daemon_.Wait(Deadline(std::chrono::seconds(60)));
    EXPECT_TRUE(st.ok() && WIFEXITED(*st) && WEXITSTATUS(*st) == 0)
        << "daemon did not exit cleanly: " << Log();
    daemon_.Stop();
  }
  std::string Log() { return TailOfFile(runtime_ + "/serve.log", 4000); }
  // Where the daemon keeps the runtime dirs of its VMs.
  std::string PoolVmDir() const { return runtime_ + "/daemon/pool/vm/"; }
  Result<vmfactory::v1::StatusResponse> Status() {
    VMF_ASSIGN_OR_RETURN(auto c, DaemonClient::Connect(socket_));
    return c->GetStatus();
  }
  // Waits until the pool holds `n` ready VMs.
  vmfactory::v1::StatusResponse WaitReady(int n, Duration timeout = std::chrono::seconds(60)) {
    Deadline d(timeout);
    vmfactory::v1::StatusResponse last;
    while (!d.expired()) {
      auto s = Status();
      if (s.ok()) {
        last = *s;
        if (s->ready_size() == n && s->booting() == 0) return last;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << "pool never reached " << n << " ready; last: " << last.ready_size() << " ready, "
                  << last.booting() << " booting; log:\n"
                  << Log();
    return last;
  }
  int PoolQemus() { return CountProcessesMentioning(PoolVmDir()) / 2; }  // QEMU + proxy each

  std::string runtime_, socket_;
  std::vector<std::string> start_extra_;  // what SetUp starts the daemon with
  std::string start_cache_ = "2";
  int port_ = 0;
  UniqueFd log_;
  ChildProcess daemon_;
};

TEST_F(DaemonTest, PoolFillsHandsOutAndRefills) {
  auto s = WaitReady(2);
  EXPECT_EQ(s.base_source(), "template");
  EXPECT_EQ(PoolQemus(), 2);
  auto [rc, out] = Cli(runtime_, {"run", "--", "hostname"});
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out.size(), 33u) << out;  // the VM id and a newline
  bool was_pooled = false;
  for (const auto& r : s.ready()) was_pooled |= out == r.id() + "\n";
  EXPECT_TRUE(was_pooled) << "served from the pool";
  WaitReady(2);
  EXPECT_EQ(PoolQemus(), 2) << "refilled to exactly 2";
  auto [src, status_out] = Cli(runtime_, {"status"});
  EXPECT_EQ(src, 0);
  EXPECT_NE(status_out.find("2 ready of 2"), std::string::npos) << status_out;
}

TEST_F(DaemonTest, SixClientsAtOnceGetDistinctVms) {
  WaitReady(2);
  std::vector<std::future<std::pair<int, std::string>>> runs;
  for (int i = 0; i < 6; ++i) {
    runs.push_back(std::async(std::launch::async, [this] {
      return Cli(runtime_, {"run", "--", "hostname"});
    }));
  }
  std::set<std::string> names;
  std::string all;
  for (auto& f : runs) {
    auto [rc, out] = f.get();
    EXPECT_EQ(rc, 0) << out;
    names.insert(out);
    all += "[" + out + "]";
  }
  EXPECT_EQ(names.size(), 6u) << all << Log();
  WaitReady(2);
}

TEST_F(DaemonTest, KilledPooledVmIsReplaced) {
  auto s = WaitReady(2);
  pid_t victim = s.ready(0).vmm_pid();
  std::string victim_id = s.ready(0).id();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  vmfactory::v1::StatusResponse now;
  WaitUntil(
      [&] {
        auto st = Status();
        if (st.ok()) now = *st;
        return st.ok() && st->replaced() >= 1 && st->ready_size() == 2;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(100));
  EXPECT_GE(now.replaced(), 1u) << Log();
  for (const auto& r : now.ready()) EXPECT_NE(r.id(), victim_id);
  EXPECT_EQ(PoolQemus(), 2);
  EXPECT_EQ(CountProcessesMentioning(victim_id), 0) << "the dead VM's proxy is gone too";
}

TEST_F(DaemonTest, VmOfAnExitedClientIsStopped) {
  WaitReady(2);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  pid_t child = ::fork();
  if (child == 0) {
    // A client that takes a VM and exits without stopping it.
    auto c = DaemonClient::Connect(socket_);
    if (!c.ok()) _exit(1);
    auto vm = (*c)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
    if (!vm.ok()) _exit(2);
    std::string id = vm->id();
    ssize_t ignored = ::write(p[1], id.data(), id.size());
    (void)ignored;
    _exit(0);
  }
  ::close(p[1]);
  char buf[64] = {};
  ssize_t n = ::read(p[0], buf, sizeof(buf));
  ::close(p[0]);
  int status;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(n, 32) << "the child got no VM";
  std::string id(buf, 32);
  // The processes die first and the VM's runtime dir goes right after: wait for both.
  WaitUntil([&] { return CountProcessesMentioning(id) == 0 && !fs::exists(PoolVmDir() + id); },
            std::chrono::seconds(20), std::chrono::milliseconds(100));
  EXPECT_EQ(CountProcessesMentioning(id), 0) << "the daemon did not stop the orphaned VM; log:\n" << Log();
  EXPECT_FALSE(fs::exists(PoolVmDir() + id));
}

TEST_F(DaemonTest, HandedOutVmKeepsWorkingAcrossADaemonRestart) {
  WaitReady(2);
  auto client = DaemonClient::Connect(socket_);
  ASSERT_TRUE(client.ok());
  auto handed = (*client)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
  ASSERT_TRUE(handed.ok()) << handed.status().ToString();
  EXPECT_EQ(handed->source(), "cache");
  client->reset();

  Stop();
  Start();
  auto s = WaitReady(2);
  bool known = false;
  for (const auto& h : s.handed_out()) known |= h.id() == handed->id();
  EXPECT_TRUE(known) << "the new daemon knows the VM an earlier one handed out";

  auto vm = VM::Attach(VMHandle::FromProto(*handed), TestConfig());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  auto r = Exec(**vm, {"echo", "alive"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "alive\n");
  // Hotplug through the handed-over QMP socket works too.
  ASSERT_TRUE((*vm)->AddCPUs(1).ok());
  ASSERT_TRUE((*vm)->OnlineCPUMemory().ok());
  auto n = Exec(**vm, {"nproc"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->out, "2\n");
  (*vm)->Stop();
  WaitUntil(
      [&] {
        auto st = Status();
        return st.ok() && st->handed_out_size() == 0;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(100));
  auto st = Status();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->handed_out_size(), 0) << "the daemon forgets a VM its owner stopped";
}

TEST_F(DaemonTest, PooledVmWhoseProxyIsKilledIsReplaced) {
  auto s = WaitReady(2);
  const std::string victim_id = s.ready(0).id();
  ASSERT_EQ(::kill(s.ready(0).proxy_pid(), SIGKILL), 0);
  WaitUntil(
      [&] {
        auto st = Status();
        bool victim_gone = st.ok() && std::none_of(st->ready().begin(), st->ready().end(),
                                                   [&](const auto& r) { return r.id() == victim_id; });
        return victim_gone && st->replaced() >= 1 && st->ready_size() == 2 && st->booting() == 0;
      },
      std::chrono::seconds(60), std::chrono::milliseconds(100));
  auto st = WaitReady(2);
  EXPECT_GE(st.replaced(), 1u) << Log();
  for (const auto& r : st.ready()) EXPECT_NE(r.id(), victim_id);
  EXPECT_EQ(CountProcessesMentioning(victim_id), 0) << "the VM without a proxy is stopped, QEMU too";
  EXPECT_FALSE(fs::exists(PoolVmDir() + victim_id));
  // A client is never given the broken VM.
  auto [rc, out] = Cli(runtime_, {"run", "--", "echo", "ok"});
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, "ok\n");
}

// SIGKILL of QEMU or of the proxy of a VM a client holds, during a command:
// the client gets a clear error at once, and once it stops the VM, the host
// and the daemon are back where they were.
class HandedOutKillTest : public DaemonTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(HandedOutKillTest, ClientGetsAnErrorAndNothingIsLeft) {
  WaitReady(2);
  const pid_t daemon_pid = daemon_.pid();
  const HostCensus before = TakeCensus(runtime_, daemon_pid);
  auto client = DaemonClient::Connect(socket_);
  ASSERT_TRUE(client.ok());
  auto handed = (*client)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
  ASSERT_TRUE(handed.ok()) << handed.status().ToString();
  client->reset();
  auto vm = VM::Attach(VMHandle::FromProto(*handed), TestConfig());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();

  auto exec = std::async(std::launch::async, [&] { return Exec(**vm, {"sleep", "30"}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  pid_t victim = GetParam() == "qemu" ? handed->vmm_pid() : handed->proxy_pid();
  auto killed_at = Clock::now();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  auto r = exec.get();
  EXPECT_FALSE(r.ok()) << "a command in a VM whose " << GetParam() << " was killed cannot succeed";
  EXPECT_LT(Clock::now() - killed_at, std::chrono::seconds(10))
      << "the error comes at once, not at a timeout";
  if (!r.ok()) {
    EXPECT_TRUE(r.status().code() == Code::kUnavailable || r.status().code() == Code::kCancelled ||
                r.status().code() == Code::kDataLoss)
        << r.status().ToString();
  }
  (*vm)->Stop();
  vm->reset();

  HostCensus after;
  WaitUntil(
      [&] {
        auto st = Status();
        after = TakeCensus(runtime_, daemon_pid);
        return st.ok() && st->handed_out_size() == 0 && st->ready_size() == 2 && after == before;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(200));
  EXPECT_EQ(after.ToString(), before.ToString()) << Log();
  EXPECT_EQ(CountProcessesMentioning(handed->id()), 0);
}

INSTANTIATE_TEST_SUITE_P(Kill, HandedOutKillTest, ::testing::Values("qemu", "proxy"));

TEST_F(DaemonTest, KilledDaemonIsCleanedUpByTheNextAndNeverRepeatsAVm) {
  auto s = WaitReady(2);
  std::set<std::string> seen;
  std::vector<std::string> old_pool;
  for (const auto& r : s.ready()) old_pool.push_back(r.id());
  auto client = DaemonClient::Connect(socket_);
  ASSERT_TRUE(client.ok());
  auto held = (*client)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  client->reset();
  seen.insert(held->id());
  s = WaitReady(2);
  for (const auto& r : s.ready()) old_pool.push_back(r.id());

  // SIGKILL: no clean-up at all. Its pool VMs keep running, orphaned.
  daemon_.Signal(SIGKILL);
  ASSERT_TRUE(daemon_.Wait(Deadline(std::chrono::seconds(10))).ok());
  ASSERT_GT(CountProcessesMentioning(PoolVmDir()), 2) << "the dead daemon's pool is still running";

  Start();
  s = WaitReady(2);
  for (const auto& id : old_pool) {
    if (id == held->id()) continue;
    EXPECT_EQ(CountProcessesMentioning(id), 0) << "VM " << id << " of the dead daemon's pool still runs";
    EXPECT_FALSE(fs::exists(PoolVmDir() + id));
  }
  bool known = false;
  for (const auto& h : s.handed_out()) known |= h.id() == held->id();
  EXPECT_TRUE(known) << "the held VM stays handed out to its owner";
  // The held VM still works; the new daemon hands out only new VMs.
  auto vm = VM::Attach(VMHandle::FromProto(*held), TestConfig());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  auto r = Exec(**vm, {"echo", "alive"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (int i = 0; i < 3; ++i) {
    auto c = DaemonClient::Connect(socket_);
    ASSERT_TRUE(c.ok());
    auto got = (*c)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(seen.insert(got->id()).second) << "VM " << got->id() << " handed out twice";
    for (const auto& id : old_pool) EXPECT_NE(got->id(), id) << "a VM of the dead daemon was handed out";
    auto other = VM::Attach(VMHandle::FromProto(*got), TestConfig());
    ASSERT_TRUE(other.ok());
    (*other)->Stop();
  }
  (*vm)->Stop();
}

TEST_F(DaemonTest, SocketRecordsAndPoolDirsArePrivate) {
  WaitReady(2);
  auto client = DaemonClient::Connect(socket_);
  ASSERT_TRUE(client.ok());
  auto handed = (*client)->GetVM(0, 0, Deadline(std::chrono::seconds(60)));
  ASSERT_TRUE(handed.ok()) << handed.status().ToString();
  auto mode = [](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  };
  EXPECT_EQ(mode(socket_), 0600u);
  EXPECT_EQ(mode(runtime_ + "/daemon"), 0700u);
  EXPECT_EQ(mode(PoolVmDir()), 0700u);
  int records = 0;
  for (const auto& e : fs::directory_iterator(runtime_ + "/daemon")) {
    if (e.path().filename().string().rfind("handed-", 0) == 0) {
      ++records;
      EXPECT_EQ(mode(e.path()), 0600u) << e.path();
    }
  }
  EXPECT_EQ(records, 1);
  for (const auto& vm : fs::directory_iterator(PoolVmDir())) {
    EXPECT_EQ(mode(vm.path()), 0700u) << vm.path();
    for (const auto& f : fs::directory_iterator(vm.path())) {
      EXPECT_EQ(mode(f.path()) & 077, 0u) << f.path() << " is open to group or others";
    }
  }
  auto vm = VM::Attach(VMHandle::FromProto(*handed), TestConfig());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  (*vm)->Stop();
}

TEST_F(DaemonTest, SecondDaemonRefusesAndStaleSocketIsTakenOver) {
  WaitReady(2);
  auto [rc, out] =
      Cli(runtime_, {"--template-path", SharedTemplate().root, "serve", "--cache", "0", "--metrics", ""});
  EXPECT_NE(rc, 0) << "a second daemon on the same socket must refuse";
  Stop();
  // A stale socket file (no daemon behind it) is taken over.
  auto stale = ListenUnix(socket_);
  ASSERT_TRUE(stale.ok());
  stale->reset();
  ASSERT_TRUE(fs::exists(socket_));
  Start();
  WaitReady(2);
}

// A daemon that keeps clones started and waiting for their state, no pool.
class RestoreTargetDaemonTest : public DaemonTest {
 protected:
  RestoreTargetDaemonTest() {
    start_extra_ = {"--restore-targets", "2"};
    start_cache_ = "0";
  }
};

TEST_F(RestoreTargetDaemonTest, TargetsWaitAreMeasuredAndServeClones) {
  auto waiting = [&](int n) {
    vmfactory::v1::StatusResponse last;
    EXPECT_TRUE(WaitUntil(
        [&] {
          auto s = Status();
          if (s.ok()) last = *s;
          return s.ok() && s->restore().waiting_size() == n && s->restore().starting() == 0;
        },
        std::chrono::seconds(60)))
        << "restore targets never reached " << n << "; log:\n"
        << Log();
    return last;
  };
  auto s = waiting(2);
  ASSERT_TRUE(s.has_restore());
  EXPECT_EQ(s.restore().target(), 2);
  EXPECT_EQ(s.ready_size(), 0) << "no pool";
  EXPECT_EQ(PoolQemus(), 2) << "a QEMU and a proxy per target";
  std::set<std::string> ids;
  for (const auto& w : s.restore().waiting()) {
    EXPECT_GT(w.pss_bytes(), 1u << 20) << "the PSS of its QEMU and proxy is measured";
    EXPECT_LT(w.pss_bytes(), 256u << 20) << "a waiting target has not touched guest RAM";
    ids.insert(w.id());
  }

  // A clone takes a waiting target: its VM id is one of theirs.
  auto [rc, out] = Cli(runtime_, {"run", "--", "hostname"});
  EXPECT_EQ(rc, 0);
  ASSERT_EQ(out.size(), 33u) << out;
  EXPECT_EQ(ids.count(out.substr(0, 32)), 1u) << "served from a restore target: " << out;
  s = waiting(2);
  EXPECT_EQ(s.restore().taken(), 1u);
  EXPECT_EQ(PoolQemus(), 2) << "replaced by exactly one";

  auto [src, status_out] = Cli(runtime_, {"status"});
  EXPECT_EQ(src, 0);
  EXPECT_NE(status_out.find("restore targets: 2 waiting of 2"), std::string::npos) << status_out;
  EXPECT_NE(status_out.find(" PSS "), std::string::npos) << status_out;
  httplib::Client http("127.0.0.1", port_);
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m) << "metrics endpoint down";
  EXPECT_NE(m->body.find("vmfactory_restore_targets_waiting 2"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("vmfactory_restore_target_pss_bytes{vm=\"" + s.restore().waiting(0).id() + "\"} "),
            std::string::npos)
      << m->body;
}

TEST_F(DaemonTest, MetricsParseAndMove) {
  WaitReady(2);
  httplib::Client http("127.0.0.1", port_);
  // The gauge follows the pool a moment after status shows it full.
  int http_status = 0;
  std::string body;
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto got = http.Get("/metrics");
        http_status = got ? got->status : 0;
        body = got ? got->body : "";
        return body.find("vmfactory_pool_ready 2") != std::string::npos;
      },
      std::chrono::seconds(10), std::chrono::milliseconds(100)))
      << body;
  ASSERT_NE(http_status, 0) << "metrics endpoint down";
  EXPECT_EQ(http_status, 200);
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? [-+0-9.eEInf]+$)");
  std::istringstream lines(body);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_TRUE(std::regex_match(line, sample)) << "not Prometheus text: " << line;
    ++samples;
  }
  EXPECT_GT(samples, 5);
  // Where this host has cgroups, each pooled VM's usage is in the metrics
  // and in `vmfactory status`.
  if (VmCgroup::Create("probe-" + std::to_string(::getpid()), {}).ok()) {
    EXPECT_NE(body.find("vmfactory_vm_memory_limit_bytes{vm=\""), std::string::npos) << body;
    EXPECT_NE(body.find("state=\"ready\""), std::string::npos) << body;
    auto [src, status] = Cli(runtime_, {"status"});
    EXPECT_EQ(src, 0);
    EXPECT_NE(status.find(" MiB, "), std::string::npos) << status;
    EXPECT_NE(status.find(" tasks"), std::string::npos) << status;
  }
  auto [rc, out] = Cli(runtime_, {"run", "--", "true"});
  EXPECT_EQ(rc, 0);
  auto after = http.Get("/metrics");
  ASSERT_TRUE(after);
  EXPECT_NE(after->body.find("vmfactory_getvm_seconds_count{source=\"cache\"} 1"), std::string::npos)
      << after->body;
}

TEST(DaemonConfigTest, ConfigErrorsNameTheKey) {
  std::string dir = TestRuntimeDir() + "-cfg";
  fs::create_directories(dir);
  struct Case {
    std::string toml, expect;
  };
  std::vector<Case> cases = {
      {"[factory]\nvm_cache_numbr = 2\n", "factory.vm_cache_numbr"},
      {"[factory]\nvm_cache_number = -1\n", "factory.vm_cache_number"},
      {"[hypervisor.qemu]\nkernel = \"/nonexistent/vmlinuz\"\n", "/nonexistent/vmlinuz"},
  };
  for (const auto& c : cases) {
    std::ofstream(dir + "/config.toml") << c.toml;
    auto [rc, out] = Cli(dir, {"--config", dir + "/config.toml", "serve"}, dir + "/err");
    EXPECT_EQ(rc, 2) << c.toml;
    std::string err = TailOfFile(dir + "/err", 4096);
    EXPECT_NE(err.find(c.expect), std::string::npos) << err;
    EXPECT_NE(err.find("config.toml:"), std::string::npos) << "names the file and line: " << err;
  }
  EXPECT_FALSE(fs::exists(dir + "/daemon.sock"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace vmf::testing
