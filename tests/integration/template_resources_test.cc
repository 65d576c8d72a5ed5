// Host resource failures around templates: a template dir that is full,
// read-only, owned by someone else or open to others. `init` fails at once
// with an error naming the dir, leaves nothing, and the last good template
// keeps serving clones. Needs root (it mounts a small tmpfs of its own).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>

#include "common/fd.h"
#include "factory/factory.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

class TemplateResourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
    mnt_ = TestRuntimeDir() + "-tplfs";
    fs::create_directories(mnt_);
    // Room for one template (RAM file + 64 MiB) with some to spare, not two.
    uint64_t size_mib = TestConfig().hypervisor.memory_mib + 64 + 128;
    std::string opts = "size=" + std::to_string(size_mib) + "m,mode=0700";
    ASSERT_EQ(::mount("tmpfs", mnt_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()), 0)
        << strerror(errno);
    root_ = mnt_ + "/template";
  }
  void TearDown() override {
    if (mnt_.empty()) return;
    ::mount(nullptr, mnt_.c_str(), nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, nullptr);
    EXPECT_EQ(::umount2(mnt_.c_str(), MNT_DETACH), 0) << strerror(errno);
    std::error_code ec;
    fs::remove_all(mnt_, ec);
    EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
    EXPECT_EQ(CountVmDirs(), 0);
  }

  Result<TemplateInfo> Init(bool force) {
    TemplateOptions o;
    o.force = force;
    o.mount_tmpfs = false;  // the test's own tmpfs plays that part
    return CreateTemplate(TestConfig(), root_, o);
  }
  // The last good template still loads and serves a clone that runs.
  void ExpectStillServes(const std::string& generation) {
    auto t = LoadTemplate(root_);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(t->generation, generation);
    auto vm = CloneFromTemplate(*t, TestConfig(), nullptr, nullptr);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    auto r = Exec(**vm, {"echo", "still good"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->out, "still good\n");
  }
  // Nothing but the published generation (and its link) in the root.
  void ExpectOnlyGeneration(const std::string& generation) {
    for (const auto& e : fs::directory_iterator(root_)) {
      std::string name = e.path().filename();
      EXPECT_TRUE(name == "current" || e.path() == generation) << "left behind: " << e.path();
    }
  }
  uint64_t FreeMib() {
    struct statvfs v {};
    EXPECT_EQ(::statvfs(mnt_.c_str(), &v), 0);
    return (static_cast<uint64_t>(v.f_bavail) * v.f_frsize) >> 20;
  }

  std::string mnt_, root_;
};

TEST_F(TemplateResourceTest, FullReadOnlyAndForeignDirsFailCleanlyAndTheLastTemplateServes) {
  auto first = Init(false);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string gen = first->generation;

  // 1. Full: only 32 MiB left.
  {
    uint64_t fill = FreeMib() - 32;
    UniqueFd f(::open((mnt_ + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(f.valid());
    ASSERT_EQ(::posix_fallocate(f.get(), 0, static_cast<off_t>(fill << 20)), 0);
    auto again = Init(true);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status().code(), Code::kResourceExhausted) << again.status().ToString();
    EXPECT_NE(again.status().message().find(root_), std::string::npos) << again.status().ToString();
    EXPECT_NE(again.status().message().find("MiB free"), std::string::npos) << again.status().ToString();
    ExpectOnlyGeneration(gen);
    ExpectStillServes(gen);
    ::unlink((mnt_ + "/filler").c_str());
  }

  // 2. Read-only (as root, permission bits do not stop us; a read-only mount does).
  {
    ASSERT_EQ(::mount(nullptr, mnt_.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr),
              0)
        << strerror(errno);
    auto again = Init(true);
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.status().message().find(root_), std::string::npos) << again.status().ToString();
    EXPECT_NE(again.status().message().find("read-only"), std::string::npos) << again.status().ToString();
    auto load = LoadTemplate(root_);
    EXPECT_TRUE(load.ok()) << load.status().ToString();
    // QEMU 7.2 opens the RAM file read-write even for a private mapping, so
    // clones need the filesystem writable again (they never write the file).
    ASSERT_EQ(::mount(nullptr, mnt_.c_str(), nullptr, MS_REMOUNT | MS_NOSUID | MS_NODEV, nullptr), 0);
    ExpectOnlyGeneration(gen);
    ExpectStillServes(gen);
  }

  // 3. Owned by someone else: neither init nor load touches it.
  {
    ASSERT_EQ(::chown(root_.c_str(), 65534, 65534), 0);
    auto again = Init(true);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.status().code(), Code::kPermissionDenied) << again.status().ToString();
    EXPECT_NE(again.status().message().find(root_), std::string::npos) << again.status().ToString();
    auto load = LoadTemplate(root_);
    ASSERT_FALSE(load.ok());
    EXPECT_EQ(load.status().code(), Code::kPermissionDenied) << load.status().ToString();
    ASSERT_EQ(::chown(root_.c_str(), 0, 0), 0);
    ExpectOnlyGeneration(gen);
    ExpectStillServes(gen);
  }

  // 4. Writable by others: a state file anyone could have rewritten is refused.
  {
    std::string state = gen + "/state";
    ASSERT_EQ(::chmod(state.c_str(), 0666), 0);
    auto load = LoadTemplate(root_);
    ASSERT_FALSE(load.ok());
    EXPECT_EQ(load.status().code(), Code::kPermissionDenied) << load.status().ToString();
    EXPECT_NE(load.status().message().find(state), std::string::npos) << load.status().ToString();
    ASSERT_EQ(::chmod(state.c_str(), 0600), 0);
    ExpectStillServes(gen);
  }
}

}  // namespace
}  // namespace vmf::testing
