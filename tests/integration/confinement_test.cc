// Confinement on real VMs (issue 13): each VM's QEMU and proxy run as a uid
// of their own, without capabilities, under seccomp, in a jail that shows
// nothing of the host or of other VMs; a clone cannot write its template,
// and a template changed after init is refused.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/io.h"
#include "factory/factory.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

// The "Name:\tvalue" lines of /proc/PID/status.
std::map<std::string, std::string> Status(pid_t pid) {
  std::map<std::string, std::string> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string v = line.substr(colon + 1);
    v.erase(0, v.find_first_not_of(" \t"));
    out[line.substr(0, colon)] = v;
  }
  return out;
}

uint32_t UidOf(pid_t pid) { return static_cast<uint32_t>(std::stoul(Status(pid)["Uid"])); }

std::string NsOf(const std::string& pid, const std::string& ns) {
  std::error_code ec;
  return fs::read_symlink("/proc/" + pid + "/ns/" + ns, ec).string();
}

// Runs fn in a child process as uid/gid; returns its exit code.
template <typename Fn>
int RunAs(uint32_t uid, Fn fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      _exit(100);
    }
    _exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

class ConfinementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "a uid per VM and the jail need root";
  }
};

TEST_F(ConfinementTest, QemuAndProxyRunAsTheVmsUidWithoutPrivilegeInAJail) {
  auto a = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const VMConfig config = TestConfig();

  const uint32_t uid_a = UidOf((*a)->vmm_pid());
  EXPECT_NE(uid_a, 0u);
  EXPECT_GE(uid_a, config.security.uid_first);
  EXPECT_LT(uid_a, config.security.uid_first + config.security.uid_count);
  EXPECT_NE(UidOf((*b)->vmm_pid()), uid_a) << "two VMs share a uid";
  EXPECT_EQ((*a)->handle().uid, uid_a);

  for (pid_t pid : {(*a)->vmm_pid(), (*a)->proxy_pid()}) {
    SCOPED_TRACE("pid " + std::to_string(pid));
    auto st = Status(pid);
    EXPECT_EQ(UidOf(pid), uid_a) << "QEMU and proxy of one VM run as its uid";
    EXPECT_EQ(st["Gid"].substr(0, st["Gid"].find('\t')), std::to_string(uid_a));
    EXPECT_EQ(st["CapEff"], "0000000000000000");
    EXPECT_EQ(st["CapPrm"], "0000000000000000");
    EXPECT_EQ(st["CapBnd"], "0000000000000000");
    EXPECT_EQ(st["NoNewPrivs"], "1");
    EXPECT_EQ(st["Seccomp"], "2");
    const std::string p = std::to_string(pid);
    EXPECT_NE(NsOf(p, "mnt"), NsOf("self", "mnt"));
    EXPECT_NE(NsOf(p, "pid"), NsOf("self", "pid"));
    // Its root, as it sees it: its own dir, nothing of the host's secrets
    // or of other VMs.
    const std::string root = "/proc/" + p + "/root";
    EXPECT_TRUE(fs::exists(root + (*a)->dir()));
    EXPECT_TRUE(fs::exists(root + "/usr/bin"));
    EXPECT_FALSE(fs::exists(root + "/root"));
    EXPECT_FALSE(fs::exists(root + "/etc/shadow"));
    EXPECT_FALSE(fs::exists(root + "/home"));
    EXPECT_FALSE(fs::exists(root + (*b)->dir())) << "a VM sees another VM's dir";
  }
  // Only the VM (and root) may use its dir.
  struct stat st {};
  ASSERT_EQ(::stat((*a)->dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid_a);
  EXPECT_EQ(st.st_mode & 077, 0u);

  // It still works: the guest answers.
  auto r = Exec(**a, {"echo", "confined"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "confined\n");

  const std::string dir_a = (*a)->dir();
  (*a)->Stop();
  (*b)->Stop();
  EXPECT_FALSE(fs::exists(UidLeaseDir(TestRuntimeDir()) + "/" + std::to_string(uid_a)))
      << "lease not released";
  EXPECT_EQ(CountProcessesMentioning(dir_a), 0);
}

TEST_F(ConfinementTest, ACloneCannotOpenTheTemplateForWriting) {
  const TemplateInfo& t = SharedTemplate();
  auto vm = CloneFromTemplate(t, TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const uint32_t uid = UidOf((*vm)->vmm_pid());
  const std::string jail = "/proc/" + std::to_string((*vm)->vmm_pid()) + "/root";
  for (const std::string& f : {t.memory_path(), t.state_path()}) {
    SCOPED_TRACE(f);
    // As the clone's uid, on the host's path and on the path in its jail.
    EXPECT_EQ(RunAs(uid,
                    [&] {
                      int fd = ::open(f.c_str(), O_RDWR | O_CLOEXEC);
                      return fd < 0 ? 0 : 1;
                    }),
              0);
  }
  EXPECT_EQ(RunAs(uid,
                  [&] {
                    int fd = ::open((jail + t.memory_path()).c_str(), O_RDWR | O_CLOEXEC);
                    if (fd >= 0) return 1;
                    return errno == EROFS || errno == EACCES ? 0 : 2;
                  }),
            0);
  // Even root cannot write it through the clone's view: a read-only mount.
  int fd = ::open((jail + t.memory_path()).c_str(), O_RDWR | O_CLOEXEC);
  EXPECT_LT(fd, 0);
  EXPECT_EQ(errno, EROFS);
  // And QEMU holds the RAM file read-only (its mapping is private).
  int ram_fds = 0;
  const std::string fds = "/proc/" + std::to_string((*vm)->vmm_pid()) + "/fd";
  for (const auto& e : fs::directory_iterator(fds)) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec).string() != t.memory_path()) continue;
    ++ram_fds;
    auto info =
        ReadFile("/proc/" + std::to_string((*vm)->vmm_pid()) + "/fdinfo/" + e.path().filename().string());
    ASSERT_TRUE(info.ok());
    auto pos = info->find("flags:");
    ASSERT_NE(pos, std::string::npos);
    unsigned flags = std::stoul(info->substr(pos + 6), nullptr, 8);
    EXPECT_EQ(flags & O_ACCMODE, static_cast<unsigned>(O_RDONLY)) << *info;
  }
  EXPECT_GE(ram_fds, 1) << "QEMU does not hold the template's RAM file";
  // Guest writes land in its private copy: the guest keeps working.
  auto r = Exec(**vm, {"sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=8 2>/dev/null; echo ok"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "ok\n");
}

// A private copy of the shared template, for tests that damage it.
std::string CopyOfSharedTemplate(const std::string& name) {
  const TemplateInfo& t = SharedTemplate();
  std::string root = TestRuntimeDir() + "/" + name;
  fs::remove_all(root);
  fs::create_directories(root);
  ::chmod(root.c_str(), 0700);
  std::string gen = root + "/" + fs::path(t.generation).filename().string();
  fs::copy(t.generation, gen, fs::copy_options::recursive);
  ::chmod(gen.c_str(), 0700);
  fs::create_symlink(fs::path(t.generation).filename(), root + "/current");
  return root;
}

void FlipAByte(const std::string& path, off_t at) {
  ::chmod(path.c_str(), 0600);
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  unsigned char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, at), 1);
  c ^= 0x5a;
  ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
  ::close(fd);
  ::chmod(path.c_str(), 0444);
}

TEST_F(ConfinementTest, ATemplateChangedAfterInitIsRefusedNamingTheFile) {
  for (const std::string file : {"memory", "state"}) {
    SCOPED_TRACE(file);
    std::string root = CopyOfSharedTemplate("tampered-" + file);
    auto before = LoadTemplate(root);
    ASSERT_TRUE(before.ok()) << before.status().ToString();
    const std::string path = file == "memory" ? before->memory_path() : before->state_path();
    FlipAByte(path, file == "memory" ? (100 << 20) : 1000);
    auto after = LoadTemplate(root);
    ASSERT_FALSE(after.ok());
    EXPECT_EQ(after.status().code(), Code::kDataLoss);
    EXPECT_NE(after.status().message().find(path), std::string::npos) << after.status().ToString();
    EXPECT_NE(after.status().message().find("digest"), std::string::npos) << after.status().ToString();
    // The factory refuses to clone from it, and makes nothing.
    auto factory = NewTemplateFactory(TestConfig(), root);
    if (factory.ok()) {
      auto vm = (*factory)->GetVM(TestConfig(), nullptr, nullptr);
      EXPECT_FALSE(vm.ok());
    }
    EXPECT_EQ(CountProcessesMentioning(root), 0);
    fs::remove_all(root);
  }
}

}  // namespace
}  // namespace vmf::testing
