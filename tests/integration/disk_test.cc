// Disks hot-added to a running clone (what a container's rootfs rides on):
// the guest sees each by its serial, reads the files of the image, and the
// unplug gives the slot and the file back.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/process.h"
#include "common/scoped_dir.h"
#include "factory/factory.h"
#include "factory/template.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

// An ext4 image holding one file, made as the shim makes a rootfs image.
std::string MakeImage(const std::string& dir, const std::string& name, const std::string& content) {
  std::string tree = dir + "/" + name + ".tree";
  ::mkdir(tree.c_str(), 0755);
  std::ofstream(tree + "/hello.txt") << content;
  std::string image = dir + "/" + name + ".img";
  { std::ofstream f(image); }
  ::truncate(image.c_str(), 32 << 20);
  auto made = RunProgram({"mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-d", tree, image},
                         Deadline(std::chrono::seconds(60)));
  EXPECT_TRUE(made.ok()) << made.status().ToString();
  return image;
}

TEST(DiskTest, HotAddedDisksAreFoundBySerialAndUnplugged) {
  if (FindProgram("mkfs.ext4").empty()) GTEST_SKIP() << "mkfs.ext4 (e2fsprogs) is not installed";
  auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  // In the VM's dir, which its (confined) QEMU can see; owned by its uid.
  std::string a = MakeImage((*vm)->dir(), "a", "disk a\n");
  std::string b = MakeImage((*vm)->dir(), "b", "disk b\n");
  for (const auto& img : {a, b}) {
    if (uid_t owner = (*vm)->disk_owner(); owner != 0) ASSERT_EQ(::chown(img.c_str(), owner, owner), 0);
  }
  ASSERT_TRUE((*vm)->AddDisk("vmftesta", a, false).ok());
  Status ro = (*vm)->AddDisk("vmftestb", b, true);
  ASSERT_TRUE(ro.ok()) << ro.ToString();
  EXPECT_EQ((*vm)->AddDisk("vmftesta", a, false).code(), Code::kAlreadyExists);

  // The guest finds each disk by its serial (the hot-add takes a moment).
  auto r =
      Exec(**vm, {"sh", "-c",
                  "for i in $(seq 1 200); do [ -e /sys/block/vdb ] && break; sleep 0.05; done; "
                  "for d in /sys/block/vd*; do echo \"$(basename $d) $(cat $d/serial) $(cat $d/ro)\"; done"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->out.find("vmftesta 0"), std::string::npos) << r->out;
  EXPECT_NE(r->out.find("vmftestb 1"), std::string::npos) << r->out;

  ASSERT_TRUE((*vm)->RemoveDisk("vmftesta").ok());
  ASSERT_TRUE((*vm)->RemoveDisk("vmftestb").ok());
  EXPECT_EQ((*vm)->RemoveDisk("vmftesta").code(), Code::kNotFound);
  r = Exec(**vm, {"sh", "-c", "ls /sys/block"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out.find("vd"), std::string::npos) << r->out;
  // The slots are free again: a new disk fits.
  EXPECT_TRUE((*vm)->AddDisk("vmftestc", a, true).ok());
}

TEST(DiskTest, ABadImageIsAClearError) {
  auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  Status st = (*vm)->AddDisk("vmfnosuch", (*vm)->dir() + "/no-such.img", false);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no-such.img"), std::string::npos) << st.ToString();
  // The VM is unharmed.
  auto r = Exec(**vm, {"true"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
}

}  // namespace
}  // namespace vmf::testing
