// Confined spawns (common/jail.h, ChildProcess::Spawn): a child in new
// namespaces under another uid starts even when the parent has many threads,
// and a failed step is reported by name. Needs root (uid change, mounts).
#include "common/jail.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/process.h"
#include "common/scoped_dir.h"

namespace vmf {
namespace {

constexpr uid_t kNobodyish = 0x7ffffff0;

Confinement NewIdsInNamespaces() {
  Confinement c;
  c.change_ids = true;
  c.uid = kNobodyish;
  c.gid = kNobodyish;
  c.namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
  c.cap_last = LastCapability();
  return c;
}

// A child made by a raw clone() of a threaded process must not use glibc's
// setxid broadcast (it would wait for the parent's threads, which the child
// does not have): the ids change with raw system calls.
// What a child's /proc/self/status says of transparent huge pages.
std::string ThpLineOfChild(bool no_huge_pages) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  SpawnOptions o;
  o.stdout_fd = p[1];
  o.no_huge_pages = no_huge_pages;
  auto child = ChildProcess::Spawn({"grep", "THP_enabled", "/proc/self/status"}, o);
  ::close(p[1]);
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  EXPECT_TRUE(child.ok()) << child.status().ToString();
  if (child.ok()) EXPECT_TRUE(child->Wait(Deadline(std::chrono::seconds(10))).ok());
  return out;
}

TEST(SpawnTest, NoHugePagesIsInheritedThroughExec) {
  const std::string with = ThpLineOfChild(false);
  if (with.empty()) GTEST_SKIP() << "this kernel's /proc/PID/status has no THP_enabled line";
  EXPECT_EQ(ThpLineOfChild(true), "THP_enabled:\t0\n");
}

TEST(JailTest, ConfinedChildrenOfAThreadedParentStartAndChangeIds) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  Confinement c = NewIdsInNamespaces();
  std::atomic<bool> stop{false};
  std::vector<std::jthread> busy;
  for (int i = 0; i < 4; ++i) {
    busy.emplace_back([&] {
      while (!stop) std::vector<char> v(4096);  // malloc-heavy, as a real process
    });
  }
  std::vector<std::jthread> spawners;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    spawners.emplace_back([&] {
      for (int k = 0; k < 5; ++k) {
        SpawnOptions o;
        o.confine = &c;
        auto child =
            ChildProcess::Spawn({"/bin/sh", "-c", "test \"$(id -u)\" = " + std::to_string(kNobodyish)}, o);
        ASSERT_TRUE(child.ok()) << child.status().ToString();
        auto st = child->Wait(Deadline(std::chrono::seconds(20)));
        ASSERT_TRUE(st.ok()) << st.status().ToString();
        EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeWaitStatus(*st);
        ++ok;
      }
    });
  }
  spawners.clear();
  stop = true;
  EXPECT_EQ(ok, 20);
}

TEST(JailTest, AJailHoldsOnlyWhatWasBoundAndAFailedStepIsNamed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto dir = ScopedDir::Create("/tmp/vmf-jail-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  std::string root = dir->path() + "/root";
  ASSERT_EQ(::mkdir(root.c_str(), 0700), 0);
  std::string file = dir->path() + "/visible";
  ASSERT_EQ(::close(::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);

  auto jail = JailBuilder(root).ReadOnly("/usr").ReadOnly(file).Build();
  ASSERT_TRUE(jail.ok()) << jail.status().ToString();
  Confinement c = NewIdsInNamespaces();
  c.root_dir = root;
  c.steps = *jail;
  SpawnOptions o;
  o.confine = &c;
  // The bound file is there, read-only; /root and the host's /tmp are not.
  auto child = ChildProcess::Spawn(
      {"/bin/sh", "-c",
       "test -e " + file + " && ! test -w " + file + " && ! test -e /root && ! test -e /tmp/" +
           std::filesystem::path(dir->path()).filename().string() + "/root"},
      o);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  auto st = child->Wait(Deadline(std::chrono::seconds(20)));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeWaitStatus(*st);

  // A source that does not exist fails at its step, which the error names.
  auto bad = JailBuilder(root).ReadOnly("/usr").Build();
  ASSERT_TRUE(bad.ok());
  Confinement b = c;
  b.steps = *bad;
  b.steps.push_back({JailStep::kBindRO, "/nonexistent-vmf-source", root + "/x", "/x"});
  o.confine = &b;
  auto failed = ChildProcess::Spawn({"/bin/true"}, o);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("/nonexistent-vmf-source"), std::string::npos)
      << failed.status().ToString();
}

}  // namespace
}  // namespace vmf
