// Template digests (factory/digest.h): a file is checked against its digest
// unless it is the very version init hashed (its stamp), and any write gives
// it a new stamp.
#include "factory/digest.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace vmf {
namespace {

class DigestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() / ("vmf-digest-" + std::to_string(::getpid()))).string();
    std::ofstream(path_) << "abc";
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_;
};

TEST_F(DigestTest, ADigestIsCheckedAndAStampSkipsOnlyTheVersionItNames) {
  auto digest = Sha256File(path_);
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2 "abc"
  EXPECT_TRUE(CheckDigest("test file", path_, *digest).ok());
  const std::string wrong(64, '0');
  Status st = CheckDigest("test file", path_, wrong);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find(path_), std::string::npos) << st.ToString();

  auto stamp = FileStamp(path_);
  ASSERT_TRUE(stamp.ok());
  EXPECT_TRUE(CheckDigest("test file", path_, *digest, *stamp).ok());
  // A write, even of the same size, is a new version: hashed again, refused.
  // (File times come from the kernel's coarse clock: a write within the same
  // tick would keep them; init stamps files no one can write any more.)
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::ofstream(path_) << "abd";
  auto after = FileStamp(path_);
  ASSERT_TRUE(after.ok());
  EXPECT_NE(*after, *stamp);
  EXPECT_EQ(CheckDigest("test file", path_, *digest, *stamp).code(), Code::kDataLoss);
}

}  // namespace
}  // namespace vmf
