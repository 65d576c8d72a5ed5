// VmCgroup against this host's real cgroup file systems (v1 or v2); skipped
// where there is none we may write (not root, read-only /sys/fs/cgroup).
#include "common/cgroup.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/io.h"
#include "common/process.h"

namespace vmf {
namespace {

namespace fs = std::filesystem;

std::string TestName(const std::string& what) { return "unit-" + what + "-" + std::to_string(::getpid()); }

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Creates the group or skips the test when the host has no usable cgroups.
#define CREATE_OR_SKIP(var, name, limits)                                          \
  auto var##_r = VmCgroup::Create(name, limits);                                   \
  if (!var##_r.ok() && var##_r.status().code() == Code::kUnavailable) {            \
    GTEST_SKIP() << "no usable cgroup hierarchy: " << var##_r.status().ToString(); \
  }                                                                                \
  ASSERT_TRUE(var##_r.ok()) << var##_r.status().ToString();                        \
  VmCgroup var = std::move(*var##_r)

bool IsV2(const VmCgroup& cg) { return fs::exists(cg.dirs()[0] + "/cgroup.controllers"); }

std::string ReadControl(const VmCgroup& cg, const std::string& file) {
  for (const std::string& d : cg.dirs()) {
    if (fs::exists(d + "/" + file)) return Trim(ReadFile(d + "/" + file).value());
  }
  return "<no " + file + ">";
}

TEST(CgroupTest, CreatesTheGroupWithItsLimitsAndRemovesIt) {
  const std::string name = TestName("limits");
  std::vector<std::string> dirs;
  {
    CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 256u << 20, .cpus = 1.5, .pids = 64}));
    dirs = cg.dirs();
    ASSERT_FALSE(dirs.empty());
    for (const std::string& d : dirs) {
      EXPECT_TRUE(fs::is_directory(d)) << d;
      EXPECT_EQ(fs::path(d).filename(), name);
      EXPECT_EQ(fs::path(d).parent_path().filename(), "vmfactory");
    }
    if (IsV2(cg)) {
      EXPECT_EQ(ReadControl(cg, "memory.max"), std::to_string(256u << 20));
      EXPECT_EQ(ReadControl(cg, "memory.swap.max"), "0");
      EXPECT_EQ(ReadControl(cg, "cpu.max"), "150000 100000");
      EXPECT_EQ(ReadControl(cg, "pids.max"), "64");
    } else {
      EXPECT_EQ(ReadControl(cg, "memory.limit_in_bytes"), std::to_string(256u << 20));
      if (fs::exists(dirs[0] + "/memory.memsw.limit_in_bytes")) {
        EXPECT_EQ(ReadControl(cg, "memory.memsw.limit_in_bytes"), std::to_string(256u << 20));
      }
      EXPECT_EQ(ReadControl(cg, "cpu.cfs_quota_us"), "150000");
      EXPECT_EQ(ReadControl(cg, "cpu.cfs_period_us"), "100000");
      EXPECT_EQ(ReadControl(cg, "pids.max"), "64");
    }
    EXPECT_EQ(cg.Usage().memory_limit_bytes, 256u << 20);
    EXPECT_EQ(cg.LimitHit(), std::nullopt);

    // Raised (a VM that grew), then lowered: v1's memory+swap limit follows.
    ASSERT_TRUE(cg.SetLimits({.memory_bytes = 512u << 20, .cpus = 2, .pids = 64}).ok());
    EXPECT_EQ(cg.Usage().memory_limit_bytes, 512u << 20);
    ASSERT_TRUE(cg.SetLimits({.memory_bytes = 128u << 20, .cpus = 2, .pids = 64}).ok());
    EXPECT_EQ(cg.Usage().memory_limit_bytes, 128u << 20);
  }
  for (const std::string& d : dirs) EXPECT_FALSE(fs::exists(d)) << d << " was left behind";
}

TEST(CgroupTest, ASecondGroupOfTheSameNameIsRefused) {
  const std::string name = TestName("twice");
  CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 64u << 20}));
  auto again = VmCgroup::Create(name, {.memory_bytes = 64u << 20});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists) << again.status().ToString();
  EXPECT_TRUE(fs::exists(cg.dirs()[0])) << "the failed one must not remove the first one's dir";
}

TEST(CgroupTest, BadNamesAreRefused) {
  for (const char* bad : {"", ".", "..", "a/b", "../x"}) {
    auto cg = VmCgroup::Create(bad, {});
    ASSERT_FALSE(cg.ok()) << bad;
    EXPECT_EQ(cg.status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST(CgroupTest, ASpawnedChildIsInTheGroupBeforeItExecs) {
  const std::string name = TestName("spawn");
  CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 64u << 20, .cpus = 1, .pids = 16}));
  SpawnOptions opts;
  opts.cgroup_procs_fds = cg.procs_fds();
  // The child lists its own cgroups and fds: both as exec'd, nothing later.
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  opts.stdout_fd = w.get();
  auto child = ChildProcess::Spawn({"cat", "/proc/self/cgroup"}, opts);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  w.reset();
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(r.get(), buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  ASSERT_TRUE(child->Wait(Deadline(std::chrono::seconds(10))).ok());
  EXPECT_NE(out.find("/vmfactory/" + name + "\n"), std::string::npos) << out;

  // A long-lived one, counted in the group's usage.
  opts.stdout_fd = -1;
  auto sleeper = ChildProcess::Spawn({"sleep", "30"}, opts);
  ASSERT_TRUE(sleeper.ok()) << sleeper.status().ToString();
  std::string procs = ReadFile(cg.dirs()[0] + "/cgroup.procs").value();
  EXPECT_NE(procs.find(std::to_string(sleeper->pid())), std::string::npos) << procs;
  // The cgroup fds were not passed on to the program.
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(sleeper->pid()) + "/fd")) {
    std::error_code ec;
    std::string target = fs::read_symlink(e.path(), ec).string();
    EXPECT_EQ(target.find("cgroup.procs"), std::string::npos) << e.path() << " -> " << target;
  }
  CgroupUsage u = cg.Usage();
  EXPECT_GT(u.memory_bytes, 0u);
  EXPECT_EQ(u.memory_limit_bytes, 64u << 20);
  if (fs::exists(cg.dirs().back() + "/pids.current")) {
    EXPECT_EQ(u.pids, 1u);
  }
  sleeper->Stop(std::chrono::milliseconds(0));
}

TEST(CgroupTest, JoinMovesARunningProcess) {
  const std::string name = TestName("join");
  CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 64u << 20}));
  auto sleeper = ChildProcess::Spawn({"sleep", "30"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.status().ToString();
  ASSERT_TRUE(cg.Join(sleeper->pid()).ok());
  std::string mine = ReadFile("/proc/" + std::to_string(sleeper->pid()) + "/cgroup").value();
  EXPECT_NE(mine.find("/vmfactory/" + name + "\n"), std::string::npos) << mine;
  sleeper->Stop(std::chrono::milliseconds(0));
}

TEST(CgroupTest, AProcessOverTheMemoryLimitIsKilledAndLimitHitSaysSo) {
  const std::string name = TestName("oom");
  std::vector<std::string> dirs;
  {
    CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 32u << 20, .pids = 16}));
    dirs = cg.dirs();
    int go[2];
    ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Waits until it is in the group, then touches up to 1 GiB.
      char c;
      if (::read(go[0], &c, 1) != 1) _exit(2);
      for (int i = 0; i < 256; ++i) {
        void* m = ::malloc(4u << 20);
        if (!m) _exit(3);
        std::memset(m, i + 1, 4u << 20);
      }
      _exit(0);
    }
    ::close(go[0]);
    Status joined = cg.Join(pid);
    ASSERT_EQ(::write(go[1], "x", 1), 1);
    ::close(go[1]);
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(joined.ok()) << joined.ToString();
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << DescribeWaitStatus(st);
    EXPECT_GE(cg.Usage().oom_kills, 1u);
    EXPECT_EQ(cg.LimitHit(), "killed by its cgroup's memory limit (32 MiB)");
  }
  for (const std::string& d : dirs) EXPECT_FALSE(fs::exists(d)) << d << " was left behind";
}

TEST(CgroupTest, AdoptTakesOverAReleasedGroupAndRemovesIt) {
  const std::string name = TestName("adopt");
  std::vector<std::string> dirs;
  {
    CREATE_OR_SKIP(cg, name, (CgroupLimits{.memory_bytes = 96u << 20, .pids = 32}));
    dirs = cg.Release();
  }
  for (const std::string& d : dirs) ASSERT_TRUE(fs::exists(d)) << "released, so kept: " << d;
  {
    auto cg = VmCgroup::Adopt(name, dirs);
    ASSERT_TRUE(cg.ok()) << cg.status().ToString();
    EXPECT_EQ(cg->dirs(), dirs);
    EXPECT_EQ(cg->limits().memory_bytes, 96u << 20);
    EXPECT_EQ(cg->Usage().memory_limit_bytes, 96u << 20);
  }
  for (const std::string& d : dirs) EXPECT_FALSE(fs::exists(d)) << d << " was left behind";
}

TEST(CgroupTest, AdoptRefusesDirsThatAreNotAVmGroup) {
  const std::string tmp = ::testing::TempDir() + "/cg-adopt-" + std::to_string(::getpid());
  fs::create_directories(tmp + "/vmfactory/id1");
  for (const auto& [why, dirs] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"not a cgroup fs", {tmp + "/vmfactory/id1"}},
           {"another name", {"/sys/fs/cgroup/memory/vmfactory/id2"}},
           {"not below vmfactory/", {"/sys/fs/cgroup/memory/id1"}},
           {"relative", {"sys/fs/cgroup/memory/vmfactory/id1"}},
           {"not normal", {"/sys/fs/cgroup/memory/../memory/vmfactory/x/../id1"}},
       }) {
    auto cg = VmCgroup::Adopt("id1", dirs);
    EXPECT_FALSE(cg.ok()) << why;
  }
  EXPECT_TRUE(fs::exists(tmp + "/vmfactory/id1"));
  fs::remove_all(tmp);
}

TEST(CgroupTest, NoHierarchyIsUnavailableNotAnError) {
  const std::string tmp = ::testing::TempDir() + "/cg-none-" + std::to_string(::getpid());
  fs::create_directories(tmp);
  std::ofstream(tmp + "/mountinfo") << "22 1 0:21 / /proc rw - proc proc rw\n";
  std::ofstream(tmp + "/cgroup") << "0::/\n";
  auto cg = VmCgroup::Create("x", {}, {.mountinfo = tmp + "/mountinfo", .self_cgroup = tmp + "/cgroup"});
  ASSERT_FALSE(cg.ok());
  EXPECT_EQ(cg.status().code(), Code::kUnavailable) << cg.status().ToString();
  fs::remove_all(tmp);
}

TEST(CgroupTest, OwnCgroupPathReadsV1AndV2Lines) {
  const std::string tmp = ::testing::TempDir() + "/cg-self-" + std::to_string(::getpid());
  fs::create_directories(tmp);
  std::ofstream(tmp + "/cgroup") << "5:cpu,cpuacct:/a\n4:memory:/process_api/x\n1:name=systemd:/s\n0::/u\n";
  CgroupSystem sys{.mountinfo = "", .self_cgroup = tmp + "/cgroup"};
  EXPECT_EQ(OwnCgroupPath("memory", sys), "/process_api/x");
  EXPECT_EQ(OwnCgroupPath("cpu", sys), "/a");
  EXPECT_EQ(OwnCgroupPath("cpuacct", sys), "/a");
  EXPECT_EQ(OwnCgroupPath("", sys), "/u");
  EXPECT_EQ(OwnCgroupPath("pids", sys), "");
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace vmf
