// The containerd test harness, proved with runc: a private containerd
// (support/containerd_env.h) runs the busybox image made offline
// (support/oci_image.h) through containerd-shim-runc-v2. What runc does here
// is the behaviour (and the latency baseline) that our shim,
// io.containerd.vmfactory.v2, is measured against. ContainerdShimContract
// records what containerd hands a shim binary, with a fake one.
//
// Needs root, containerd, ctr and runc (scripts/install-deps.sh); skipped
// otherwise.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/io.h"
#include "common/process.h"
#include "common/procfs.h"
#include "common/scoped_dir.h"
#include "factory/digest.h"
#include "support/containerd_env.h"
#include "support/oci_image.h"

namespace vmf::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Ms = std::chrono::duration<double, std::milli>;

// Why these tests cannot run here, or "" if they can.
std::string MissingPrerequisite() {
  if (::geteuid() != 0) return "needs root";
  for (const char* prog : {"containerd", "ctr", "runc", "containerd-shim-runc-v2", "tar"}) {
    if (FindProgram(prog).empty()) return std::string(prog) + " is not installed (scripts/install-deps.sh)";
  }
  if (::access("/bin/busybox", X_OK) != 0) return "/bin/busybox is missing (busybox-static)";
  return "";
}

bool ArgvMentions(pid_t pid, const std::string& needle) {
  for (const std::string& arg : ProcessArgv(pid)) {
    if (arg.find(needle) != std::string::npos) return true;
  }
  return false;
}

// containerd and runc-shim processes, all of them or those naming `needle`.
std::vector<pid_t> RuntimeProcesses(const std::string& needle = "") {
  std::vector<pid_t> out;
  for (const char* name : {"containerd", "containerd-shim-runc-v2"}) {
    for (pid_t p : ProcessesNamed(name)) {
      if (needle.empty() || ArgvMentions(p, needle)) out.push_back(p);
    }
  }
  return out;
}

int MountsUnder(const std::string& dir) {
  auto info = ReadFile("/proc/self/mountinfo", 16 << 20);
  if (!info.ok()) return -1;
  int n = 0;
  std::istringstream in(*info);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string id, parent, devno, root, mount_point;
    if ((f >> id >> parent >> devno >> root >> mount_point) && mount_point.rfind(dir + "/", 0) == 0) ++n;
  }
  return n;
}

// Where the cgroup hierarchies are mounted (v1 controllers, v2).
std::vector<std::string> CgroupRoots() {
  std::vector<std::string> out;
  auto info = ReadFile("/proc/self/mountinfo", 16 << 20);
  if (!info.ok()) return out;
  std::istringstream in(*info);
  for (std::string line; std::getline(in, line);) {
    size_t dash = line.find(" - ");
    std::istringstream f(line);
    std::string id, parent, devno, root, mount_point, fstype;
    f >> id >> parent >> devno >> root >> mount_point;
    std::istringstream rest(dash == std::string::npos ? "" : line.substr(dash + 3));
    if ((rest >> fstype) && (fstype == "cgroup" || fstype == "cgroup2")) out.push_back(mount_point);
  }
  return out;
}

// The pid column of `ctr tasks ls` for a task.
pid_t TaskPid(PrivateContainerd& ctrd, const std::string& id) {
  auto r = ctrd.Ctr({"tasks", "ls"}, 30s);
  if (!r.ok()) return -1;
  std::istringstream in(r->out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream f(line);
    std::string task;
    long pid = -1;
    if ((f >> task >> pid) && task == id) return static_cast<pid_t>(pid);
  }
  return -1;
}

class ContainerdRuncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = MissingPrerequisite(); !why.empty()) GTEST_SKIP() << why;
    runtime_processes_before_ = RuntimeProcesses().size();
    auto t0 = std::chrono::steady_clock::now();
    auto started = PrivateContainerd::Start("", 30s);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    ctrd_ = std::move(*started);
    auto t1 = std::chrono::steady_clock::now();
    const std::string tar = ctrd_->dir() + "/image.tar";
    Status built = BuildBusyboxImage(tar, kTestImageRef);
    ASSERT_TRUE(built.ok()) << built.ToString();
    auto t2 = std::chrono::steady_clock::now();
    Status imported = ctrd_->ImportImage(tar);
    ASSERT_TRUE(imported.ok()) << imported.ToString() << "\ncontainerd's log:\n" << ctrd_->log();
    auto t3 = std::chrono::steady_clock::now();
    start_ms_ = Ms(t1 - t0).count();
    build_ms_ = Ms(t2 - t1).count();
    import_ms_ = Ms(t3 - t2).count();
  }

  void TearDown() override { ctrd_.reset(); }

  // `ctr run --rm IMAGE id cmd...` (FIFOs and runc's state in the temp dir).
  CtrResult Run(const std::string& id, const std::vector<std::string>& cmd,
                const std::string& stdin_data = "", std::chrono::milliseconds stdin_eof_delay = 0ms) {
    std::vector<std::string> args = {"--rm", kTestImageRef, id};
    args.insert(args.end(), cmd.begin(), cmd.end());
    auto r = ctrd_->Ctr(ctrd_->RunArgs(args), 60s, stdin_data, stdin_eof_delay);
    EXPECT_TRUE(r.ok()) << r.status().ToString() << "\ncontainerd's log:\n" << ctrd_->log();
    return r.ok() ? *r : CtrResult{};
  }

  // Starts `sleep 600` as a detached container.
  void RunDetached(const std::string& id) {
    auto r = ctrd_->Ctr(ctrd_->RunArgs({"--detach", kTestImageRef, id, "sleep", "600"}), 60s);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->exit_code, 0) << r->Describe() << "\ncontainerd's log:\n" << ctrd_->log();
  }

  // What a container leaves that Stop() must take away: checks that it is
  // there while running, stops the harness, checks that it is gone.
  void ExpectStopLeavesNothing(const std::string& id, bool kill_containerd_first) {
    const std::string dir = ctrd_->dir();
    const std::string address = ctrd_->address();
    const std::string socket = ctrd_->runc_shim_socket(id);
    const pid_t containerd = ctrd_->pid();
    const pid_t task = TaskPid(*ctrd_, id);
    ASSERT_GT(task, 0) << "no pid for task " << id;
    std::vector<pid_t> shims;
    for (pid_t p : ProcessesNamed("containerd-shim-runc-v2")) {
      if (ArgvMentions(p, address)) shims.push_back(p);
    }
    ASSERT_EQ(shims.size(), 1u);
    EXPECT_TRUE(fs::exists(socket)) << socket;
    EXPECT_GT(MountsUnder(dir), 0) << "the container's rootfs should be mounted under " << dir;

    if (kill_containerd_first) {
      ::kill(containerd, SIGKILL);  // a crashed containerd: its shim and container live on
      ASSERT_TRUE(ProcessAlive(shims[0]));
    }
    auto t0 = std::chrono::steady_clock::now();
    ctrd_->Stop();
    std::printf("Stop() with a running container%s: %.0f ms\n",
                kill_containerd_first ? " (containerd killed)" : "",
                Ms(std::chrono::steady_clock::now() - t0).count());

    EXPECT_FALSE(ProcessAlive(containerd));
    EXPECT_FALSE(ProcessAlive(shims[0]));
    EXPECT_FALSE(ProcessAlive(task)) << "the container's process " << task;
    EXPECT_TRUE(RuntimeProcesses(address).empty());
    EXPECT_TRUE(RuntimeProcesses(dir).empty());
    EXPECT_EQ(MountsUnder(dir), 0);
    EXPECT_FALSE(fs::exists(dir)) << dir;
    EXPECT_FALSE(fs::exists(socket)) << socket;
    for (const std::string& root : CgroupRoots()) {
      // ctr's default cgroupsPath is /NAMESPACE/ID; the parent goes too once empty.
      EXPECT_FALSE(fs::exists(root + "/" + PrivateContainerd::kNamespace + "/" + id)) << root;
    }
    // RESOURCE_LOCK containerd: no other test of ours starts one meanwhile.
    EXPECT_EQ(RuntimeProcesses().size(), runtime_processes_before_);
  }

  std::unique_ptr<PrivateContainerd> ctrd_;
  size_t runtime_processes_before_ = 0;
  double start_ms_ = 0, build_ms_ = 0, import_ms_ = 0;
};

TEST_F(ContainerdRuncTest, ImportNamesTheImage) {
  auto r = ctrd_->Ctr({"images", "ls", "--quiet"}, 30s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, std::string(kTestImageRef) + "\n") << r->Describe();
}

TEST_F(ContainerdRuncTest, RunsACommandFromTheImage) {
  CtrResult r = Run("c1", {"cat", "/etc/vmf-image-marker"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, kImageMarkerContents);
  EXPECT_EQ(r.err, "");
}

TEST_F(ContainerdRuncTest, ImageHasItsUsersAndDirs) {
  CtrResult r = Run("c2", {"sh", "-c",
                           "id -un; grep ^nobody: /etc/passwd | cut -d: -f3; stat -c '%a %n' /tmp /root; "
                           "echo $PATH; readlink /bin/sh"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "root\n65534\n1777 /tmp\n700 /root\n/usr/sbin:/usr/bin:/sbin:/bin\nbusybox\n");
}

TEST_F(ContainerdRuncTest, ExitCodeComesBack) {
  CtrResult r = Run("c3", {"sh", "-c", "exit 7"});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
}

TEST_F(ContainerdRuncTest, StdoutAndStderrStayApart) {
  CtrResult r = Run("c4", {"sh", "-c", "echo out; echo err >&2"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST_F(ContainerdRuncTest, StdinReachesTheProcess) {
  // ctr run forwards its stdin without a flag (-i is nerdctl's).
  CtrResult r = Run("c5", {"sh", "-c", "read line; echo \"got:$line\""}, "hello\n");
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "got:hello\n");
}

TEST_F(ContainerdRuncTest, StdinEofEndsCatWhenItComesAfterTheTaskIsCreated) {
  // The EOF becomes CloseIO on the task: a shim must close the process's
  // stdin then (and not before: it holds the stdin FIFO open itself).
  CtrResult r = Run("c6", {"cat"}, "line 1\nline 2\n", 2000ms);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "line 1\nline 2\n");
}

TEST_F(ContainerdRuncTest, TasksExecForwardsStdinAndExitCode) {
  RunDetached("c7");
  auto r = ctrd_->Ctr(ctrd_->ExecArgs({"--exec-id", "e1", "c7", "sh", "-c", "cat; echo done >&2; exit 3"}),
                      60s, "abc\n", 2000ms);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 3) << r->Describe();
  EXPECT_EQ(r->out, "abc\n");
  EXPECT_EQ(r->err, "done\n");
}

TEST_F(ContainerdRuncTest, StopLeavesNothingBehind) {
  RunDetached("c8");
  ExpectStopLeavesNothing("c8", /*kill_containerd_first=*/false);
}

TEST_F(ContainerdRuncTest, StopCleansUpAfterAKilledContainerd) {
  RunDetached("c9");
  ExpectStopLeavesNothing("c9", /*kill_containerd_first=*/true);
}

TEST_F(ContainerdRuncTest, RunTrueLatencyBaseline) {
  constexpr int kRuns = 7;
  std::vector<double> ms;
  for (int i = 0; i < kRuns; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    CtrResult r = Run("bench" + std::to_string(i), {"/bin/true"});
    ms.push_back(Ms(std::chrono::steady_clock::now() - t0).count());
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[kRuns / 2];
  std::printf("harness: containerd start %.0f ms, image build %.0f ms, import %.0f ms\n", start_ms_,
              build_ms_, import_ms_);
  std::printf(
      "ctr run --rm IMAGE id /bin/true with runc, %d runs: min %.0f ms, median %.0f ms, max %.0f ms\n", kRuns,
      sorted.front(), median, sorted.back());
  RecordProperty("runc_run_true_median_ms", static_cast<int>(median));
  RecordProperty("runc_run_true_min_ms", static_cast<int>(sorted.front()));
}

// The image alone (no containerd): the same bytes every time, and a layout
// whose digests, sizes and diff_ids hold.
TEST(BusyboxImage, IsDeterministicAndConsistent) {
  if (::access("/bin/busybox", X_OK) != 0 || FindProgram("tar").empty())
    GTEST_SKIP() << "needs busybox and tar";
  char tmpl[] = "/tmp/vmf-ociimg-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  ScopedDir dir = ScopedDir::Adopt(tmpl);
  const std::string a = dir.path() + "/a.tar", b = dir.path() + "/b.tar";
  ASSERT_TRUE(BuildBusyboxImage(a, kTestImageRef).ok());
  std::this_thread::sleep_for(1100ms);  // a clock that leaked into the bytes would show
  ASSERT_TRUE(BuildBusyboxImage(b, kTestImageRef).ok());
  auto da = Sha256File(a), db = Sha256File(b);
  ASSERT_TRUE(da.ok() && db.ok());
  EXPECT_EQ(*da, *db);

  const std::string x = dir.path() + "/x";
  ASSERT_TRUE(MakeDirs(x).ok());
  auto untar = RunCommand({"tar", "-xf", a, "-C", x}, 60s);
  ASSERT_TRUE(untar.ok() && untar->exit_code == 0);
  auto layout = ReadFile(x + "/oci-layout");
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(nlohmann::json::parse(*layout)["imageLayoutVersion"], "1.0.0");
  auto blob = [&](const nlohmann::json& desc) {
    std::string digest = desc["digest"];
    EXPECT_EQ(digest.rfind("sha256:", 0), 0u);
    std::string path = x + "/blobs/sha256/" + digest.substr(7);
    auto sum = Sha256File(path);
    EXPECT_TRUE(sum.ok() && "sha256:" + *sum == digest) << path;
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(path)), desc["size"].get<int64_t>()) << path;
    return path;
  };
  auto index = nlohmann::json::parse(*ReadFile(x + "/index.json"));
  ASSERT_EQ(index["manifests"].size(), 1u);
  const auto& m = index["manifests"][0];
  EXPECT_EQ(m["annotations"]["io.containerd.image.name"], kTestImageRef);
  EXPECT_EQ(m["annotations"]["org.opencontainers.image.ref.name"], "test");
  auto manifest = nlohmann::json::parse(*ReadFile(blob(m)));
  auto config = nlohmann::json::parse(*ReadFile(blob(manifest["config"])));
  ASSERT_EQ(manifest["layers"].size(), 1u);
  std::string layer = blob(manifest["layers"][0]);
  EXPECT_EQ(config["rootfs"]["diff_ids"][0], "sha256:" + *Sha256File(layer));
  EXPECT_EQ(config["architecture"], "amd64");
  EXPECT_EQ(config["os"], "linux");
  EXPECT_EQ(config["config"]["Cmd"], nlohmann::json::array({"sh"}));
  EXPECT_EQ(config["config"]["Env"], nlohmann::json::array({"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}));

  auto listing = RunCommand({"tar", "--utc", "-tvf", layer}, 60s);
  ASSERT_TRUE(listing.ok() && listing->exit_code == 0);
  for (const char* entry : {" ./bin/busybox\n", " ./bin/sh -> busybox\n", " ./etc/vmf-image-marker\n",
                            " ./etc/passwd\n", " ./etc/group\n", " ./proc/\n", " ./sys/\n", " ./dev/\n"}) {
    EXPECT_NE(listing->out.find(entry), std::string::npos) << entry;
  }
  EXPECT_NE(listing->out.find("drwxrwxrwt 0/0"), std::string::npos) << "/tmp should be 1777";
  EXPECT_NE(listing->out.find(" 1970-01-01 00:00 ./etc/passwd\n"), std::string::npos) << "mtime 0";
  EXPECT_EQ(RefTag("docker.io/library/vmf-busybox:test"), "test");
  EXPECT_EQ(RefTag("localhost:5000/x"), "latest");
  EXPECT_EQ(RefTag("x:1@sha256:abc"), "1");
}

// A fake `containerd` first on PATH while a test runs: the harness must say
// what went wrong and leave nothing behind.
class FakeContainerd {
 public:
  explicit FakeContainerd(const std::string& script) {
    char tmpl[] = "/tmp/vmf-fakectrd-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return;
    dir_ = ScopedDir::Adopt(tmpl);
    std::string path = dir_.path() + "/containerd";
    std::ofstream(path) << "#!/bin/sh\n" << script << "\n";
    ::chmod(path.c_str(), 0755);
    const char* old = std::getenv("PATH");
    old_path_ = old ? old : "";
    ::setenv("PATH", (dir_.path() + ":" + old_path_).c_str(), 1);
  }
  ~FakeContainerd() { ::setenv("PATH", old_path_.c_str(), 1); }

 private:
  ScopedDir dir_;
  std::string old_path_;
};

// The temp dir that an error message names (".../vmf-ctrd-XXXXXX/containerd.sock").
std::string DirNamedIn(const std::string& message) {
  size_t at = message.find("/tmp/vmf-ctrd-");
  if (at == std::string::npos) return "";
  return message.substr(at, message.find("/containerd.sock", at) - at);
}

TEST(PrivateContainerdStart, ReportsAContainerdThatExitsWithItsLog) {
  if (std::string why = MissingPrerequisite(); !why.empty()) GTEST_SKIP() << why;
  FakeContainerd fake("echo 'boom: no config for you' >&2; exit 2");
  auto started = PrivateContainerd::Start("", 10s);
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), Code::kUnavailable) << started.status().ToString();
  EXPECT_NE(started.status().message().find("exit code 2"), std::string::npos) << started.status().ToString();
  EXPECT_NE(started.status().message().find("boom: no config for you"), std::string::npos)
      << started.status().ToString();
  std::string dir = DirNamedIn(started.status().message());
  ASSERT_FALSE(dir.empty()) << started.status().ToString();
  EXPECT_FALSE(fs::exists(dir));
}

TEST(PrivateContainerdStart, GivesUpOnAContainerdThatNeverAnswers) {
  if (std::string why = MissingPrerequisite(); !why.empty()) GTEST_SKIP() << why;
  FakeContainerd fake("echo 'listening, honest' >&2; exec sleep 1000");
  auto t0 = std::chrono::steady_clock::now();
  auto started = PrivateContainerd::Start("", 2s);
  double ms = Ms(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.status().code(), Code::kDeadlineExceeded) << started.status().ToString();
  EXPECT_NE(started.status().message().find("listening, honest"), std::string::npos)
      << started.status().ToString();
  EXPECT_GE(ms, 2000);
  EXPECT_LT(ms, 10000);  // the fake ignores nothing: SIGTERM ends it at once
  std::string dir = DirNamedIn(started.status().message());
  ASSERT_FALSE(dir.empty()) << started.status().ToString();
  EXPECT_FALSE(fs::exists(dir));
  for (pid_t p : ProcessesNamed("sleep")) EXPECT_FALSE(ArgvMentions(p, "1000") && ProcessAlive(p)) << p;
}

// What containerd 1.6 gives a shim binary: a fake containerd-shim-vmfactory-v2
// (a shell script in a temp dir on containerd's PATH) records its argv,
// environment, cwd and stdin and refuses to start.
TEST(ContainerdShimContract, StartGetsArgvEnvAndBundle) {
  if (std::string why = MissingPrerequisite(); !why.empty()) GTEST_SKIP() << why;
  char tmpl[] = "/tmp/vmf-fakeshim-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  ScopedDir fake_dir = ScopedDir::Adopt(tmpl);
  const std::string record = fake_dir.path() + "/record";
  const std::string shim = fake_dir.path() + "/containerd-shim-vmfactory-v2";
  {
    std::ofstream f(shim);
    f << "#!/bin/sh\n"
         "{\n"
         "  echo '[argv]'; printf '%s\\n' \"$0\" \"$@\"\n"
         "  echo '[cwd]'; pwd\n"
         "  echo '[stdin]'; wc -c | tr -d ' '\n"
         "  echo '[env]'; env\n"
         "} >> "
      << record
      << "\n"
         "echo 'fake shim refuses' >&2\n"
         "exit 1\n";
  }
  ASSERT_EQ(::chmod(shim.c_str(), 0755), 0);

  auto started = PrivateContainerd::Start(fake_dir.path(), 30s);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  PrivateContainerd& ctrd = **started;
  const std::string tar = ctrd.dir() + "/image.tar";
  ASSERT_TRUE(BuildBusyboxImage(tar, kTestImageRef).ok());
  ASSERT_TRUE(ctrd.ImportImage(tar).ok());

  auto r = ctrd.Ctr(
      ctrd.RunArgs({"--rm", "--runtime", PrivateContainerd::kVmfactoryRuntime, kTestImageRef, "x", "true"}),
      60s);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->exit_code, 0);
  // containerd reads `start`'s stdout and stderr as one: on success they must
  // hold the shim's address and nothing else.
  EXPECT_NE(r->err.find("fake shim refuses"), std::string::npos) << r->Describe();

  auto text = ReadFile(record);
  ASSERT_TRUE(text.ok()) << "the fake shim was not run: " << r->Describe() << "\n" << ctrd.log();
  std::map<std::string, std::vector<std::string>> sections;
  std::string section;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > 2 && line.front() == '[' && line.back() == ']') {
      section = line.substr(1, line.size() - 2);
    } else {
      sections[section].push_back(line);
    }
  }
  const std::vector<std::string> want_argv = {shim,
                                              "-namespace",
                                              PrivateContainerd::kNamespace,
                                              "-address",
                                              ctrd.address(),
                                              "-publish-binary",
                                              FindProgram("containerd"),
                                              "-id",
                                              "x",
                                              "start"};
  EXPECT_EQ(sections["argv"], want_argv);
  EXPECT_EQ(sections["cwd"], std::vector<std::string>{ctrd.bundle_dir("x")});
  // No runtime options for a runtime that is not runc: stdin is empty.
  EXPECT_EQ(sections["stdin"], std::vector<std::string>{"0"});
  const auto& env = sections["env"];
  auto has = [&](const std::string& entry) { return std::find(env.begin(), env.end(), entry) != env.end(); };
  EXPECT_TRUE(has("TTRPC_ADDRESS=" + ctrd.ttrpc_address()));
  EXPECT_TRUE(has("GOMAXPROCS=2"));
  auto path =
      std::find_if(env.begin(), env.end(), [](const std::string& e) { return e.rfind("PATH=", 0) == 0; });
  ASSERT_NE(path, env.end());
  // containerd's opt plugin puts its bin dir first; ours follows.
  EXPECT_EQ(path->rfind("PATH=" + ctrd.dir() + "/opt/bin:" + fake_dir.path() + ":", 0), 0u) << *path;
  std::string shown;
  for (const char* name : {"argv", "cwd", "stdin"}) {
    for (const auto& l : sections[name]) shown += std::string(name) + ": " + l + "\n";
  }
  for (const auto& e : env) {
    for (const char* var : {"TTRPC_ADDRESS=", "GOMAXPROCS=", "PATH=", "LD_LIBRARY_PATH="}) {
      if (e.rfind(var, 0) == 0) shown += "env: " + e + "\n";
    }
  }
  std::printf("%s", shown.c_str());
}

}  // namespace
}  // namespace vmf::test
