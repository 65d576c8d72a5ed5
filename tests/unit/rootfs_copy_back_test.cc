// MirrorTree and ExtractFromImage (container/rootfs.h): how what a container
// wrote to a read-write bind is carried back to the host.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/io.h"
#include "common/process.h"
#include "common/scoped_dir.h"
#include "container/rootfs.h"

namespace vmf::container {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

void Write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
Result<ScopedDir> TempDir() {
  char tmpl[] = "/tmp/vmf-copy-back-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return ErrnoStatus(errno, "mkdtemp");
  return ScopedDir::Adopt(tmpl);
}
std::string Read(const fs::path& p) {
  auto r = ReadFile(p.string());
  return r.ok() ? *r : "<missing>";
}

TEST(MirrorTreeTest, MakesTheTargetMatchWithoutFollowingSymlinks) {
  auto tmp = TempDir();
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  const fs::path from = tmp->path() + "/from", to = tmp->path() + "/to", outside = tmp->path() + "/outside";
  fs::create_directories(from / "sub");
  fs::create_directories(to / "gone-dir");
  Write(outside, "host secret\n");
  Write(from / "same", "same\n");
  Write(to / "same", "same\n");
  Write(from / "changed", "new text\n");
  Write(to / "changed", "old\n");
  Write(to / "removed", "x\n");
  Write(to / "gone-dir" / "f", "x\n");
  Write(from / "sub" / "deep", "deep\n");
  fs::create_symlink(outside, from / "evil");
  // A symlink on the target side is replaced, never written through.
  fs::create_symlink(outside, to / "was-link");
  Write(from / "was-link", "plain file now\n");
  ::chmod((from / "changed").c_str(), 0640);

  Status st = MirrorTree(from.string(), to.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(Read(to / "same"), "same\n");
  EXPECT_EQ(Read(to / "changed"), "new text\n");
  EXPECT_EQ(fs::status(to / "changed").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  EXPECT_FALSE(fs::exists(fs::symlink_status(to / "removed")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(to / "gone-dir")));
  EXPECT_EQ(Read(to / "sub" / "deep"), "deep\n");
  ASSERT_TRUE(fs::is_symlink(fs::symlink_status(to / "evil")));
  EXPECT_EQ(fs::read_symlink(to / "evil"), outside);
  EXPECT_FALSE(fs::is_symlink(fs::symlink_status(to / "was-link")));
  EXPECT_EQ(Read(to / "was-link"), "plain file now\n");
  EXPECT_EQ(Read(outside), "host secret\n") << "written through a symlink";
}

TEST(MirrorTreeTest, AFileIsRewrittenInPlace) {
  auto tmp = TempDir();
  ASSERT_TRUE(tmp.ok());
  const fs::path from = tmp->path() + "/from", to = tmp->path() + "/to";
  Write(from, "after\n");
  Write(to, "before, and longer\n");
  struct stat before {};
  ASSERT_EQ(::stat(to.c_str(), &before), 0);
  ASSERT_TRUE(MirrorTree(from.string(), to.string()).ok());
  struct stat after {};
  ASSERT_EQ(::stat(to.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(Read(to), "after\n");
}

TEST(ExtractFromImageTest, CopiesPathsOutOfAnExt4ImageAndNamesAMissingOne) {
  if (FindProgram("debugfs").empty() || FindProgram("mkfs.ext4").empty()) GTEST_SKIP() << "no e2fsprogs";
  auto tmp = TempDir();
  ASSERT_TRUE(tmp.ok());
  const fs::path tree = tmp->path() + "/tree", out = tmp->path() + "/out";
  fs::create_directories(tree / "0" / "sub");
  fs::create_directories(out);
  Write(tree / "0" / "sub" / "f", "in the image\n");
  fs::create_symlink("/etc/shadow", tree / "0" / "link");
  Write(tree / "1", "a file\n");
  const std::string image = tmp->path() + "/binds.img";
  ASSERT_TRUE(BuildRootfsImage(tree.string(), image, 1).ok());
  Status st = ExtractFromImage(image, {"/0", "/1"}, out.string());
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(Read(out / "0" / "sub" / "f"), "in the image\n");
  EXPECT_EQ(fs::read_symlink(out / "0" / "link"), "/etc/shadow");
  EXPECT_EQ(Read(out / "1"), "a file\n");
  st = ExtractFromImage(image, {"/7"}, out.string());
  EXPECT_EQ(st.code(), Code::kNotFound) << st.ToString();
  EXPECT_EQ(ExtractFromImage(image, {"/0 /etc"}, out.string()).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace vmf::container
