// Guest management (agent/guest_ops.h) against a temporary sysfs_root.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "guest_ops.h"
#include "log.h"
#include "support/temp_sysfs.h"

namespace vmf::agent {
namespace {

using std::chrono::milliseconds;

using ::vmf::testing::TempSysfs;

class GuestOpsTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLogEnabled(false); }
  void TearDown() override { SetLogEnabled(true); }

  GuestOps Ops(milliseconds online_wait = milliseconds(200)) {
    GuestOps::Options o;
    o.sysfs_root = sys_.root();
    o.online_wait = online_wait;
    o.allow_system_changes = false;
    return GuestOps(o);
  }

  TempSysfs sys_;
};

TEST_F(GuestOpsTest, NumberedEntriesSortByNumberAndSkipOthers) {
  for (const char* d : {"cpu10", "cpu2", "cpu0", "cpufreq", "cpuidle", "cpu", "cpu1x"})
    sys_.Mkdir(std::string("devices/system/cpu/") + d);
  std::vector<std::string> want = {"cpu0", "cpu2", "cpu10"};
  EXPECT_EQ(NumberedEntries(sys_.root() + "/devices/system/cpu", "cpu"), want);
  EXPECT_TRUE(NumberedEntries(sys_.root() + "/no/such/dir", "cpu").empty());
}

TEST_F(GuestOpsTest, SmallFilesTrimmedAndBounded) {
  sys_.Write("a", "online \n\n");
  std::string text;
  ASSERT_TRUE(ReadSmallFile(sys_.root() + "/a", &text));
  EXPECT_EQ(text, "online");
  sys_.Write("big", std::string(1000, 'x'));
  ASSERT_TRUE(ReadSmallFile(sys_.root() + "/big", &text));
  EXPECT_EQ(text.size(), 256u);
  EXPECT_FALSE(ReadSmallFile(sys_.root() + "/missing", &text));
  EXPECT_TRUE(WriteSmallFile(sys_.root() + "/a", "1").ok());
  EXPECT_EQ(sys_.Read("a").substr(0, 1), "1");
  EXPECT_EQ(WriteSmallFile(sys_.root() + "/missing", "1").code(), Code::kNotFound);
}

TEST_F(GuestOpsTest, OnlinesOnlyTheCpusAskedForInNumberOrder) {
  sys_.Cpu(0, nullptr);  // the boot CPU has no online file
  sys_.Cpu(10, "0");
  sys_.Cpu(2, "0");
  sys_.Cpu(1, "1");
  sys_.Mem(0, "online");
  sys_.Mem(1, "offline");
  GuestOps ops = Ops();
  ASSERT_TRUE(ops.OnlineCpuMem(1, false, /*cpu_only=*/true).ok());
  EXPECT_EQ(sys_.CpuState(2), "1");
  EXPECT_EQ(sys_.CpuState(10), "0");
  EXPECT_EQ(sys_.MemState(1), "offline\n");  // cpu_only leaves memory alone

  ASSERT_TRUE(ops.OnlineCpuMem(0, false, false).ok());  // 0: every offline CPU
  EXPECT_EQ(sys_.CpuState(10), "1");
  EXPECT_EQ(sys_.MemState(0), "online\n");  // online already: not written
  EXPECT_EQ(sys_.MemState(1).substr(0, 6), "online");
}

TEST_F(GuestOpsTest, WaitGivesUpAfterOnlineWait) {
  sys_.Cpu(1, "0");
  GuestOps ops = Ops(milliseconds(150));
  auto start = std::chrono::steady_clock::now();
  Status st = ops.OnlineCpuMem(3, /*wait=*/true, true);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded);
  EXPECT_EQ(st.message(), "onlined 1 of 3 CPUs");
  EXPECT_GE(took, milliseconds(150));
  EXPECT_LT(took, milliseconds(1500));
  EXPECT_EQ(sys_.CpuState(1), "1");
  // Without wait, too few CPUs is not an error.
  EXPECT_TRUE(ops.OnlineCpuMem(3, false, true).ok());
}

TEST_F(GuestOpsTest, WaitSeesCpusThatAppearLater) {
  sys_.Cpu(1, "0");
  GuestOps ops = Ops(milliseconds(2000));
  std::thread later([this] {
    std::this_thread::sleep_for(milliseconds(100));
    sys_.Cpu(2, "0");
  });
  Status st = ops.OnlineCpuMem(2, true, true);
  later.join();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(sys_.CpuState(2), "1");
}

TEST_F(GuestOpsTest, MemoryDetails) {
  GuestOps ops = Ops();
  GuestOps::MemoryDetails d = ops.Memory(true);
  EXPECT_EQ(d.block_size_bytes, 0u);  // unreadable
  EXPECT_FALSE(d.hotplug_probe);
  sys_.Write("devices/system/memory/block_size_bytes", "8000000\n");
  sys_.Write("devices/system/memory/probe", "");
  d = ops.Memory(true);
  EXPECT_EQ(d.block_size_bytes, 0x8000000u);  // hexadecimal, as sysfs writes it
  EXPECT_TRUE(d.hotplug_probe);
  EXPECT_EQ(ops.Memory(false).block_size_bytes, 0u);
}

TEST_F(GuestOpsTest, ClockAndHostnameChecksInHostSafeMode) {
  GuestOps ops = Ops();
  EXPECT_TRUE(ops.SetClock(1700000000, 999999).ok());
  EXPECT_EQ(ops.SetClock(1, 1000000).code(), Code::kInvalidArgument);
  EXPECT_EQ(ops.SetClock(1, -1).code(), Code::kInvalidArgument);
  EXPECT_EQ(ops.SetClock(-1, 0).code(), Code::kInvalidArgument);
  EXPECT_TRUE(ops.SetHostname(std::string(64, 'h')).ok());
  EXPECT_TRUE(ops.SetHostname("").ok());
  EXPECT_EQ(ops.SetHostname(std::string(65, 'h')).code(), Code::kInvalidArgument);
  EXPECT_EQ(ops.SetHostname(std::string("a\0b", 3)).code(), Code::kInvalidArgument);
}

TEST_F(GuestOpsTest, ReseedChecksDataAndDevice) {
  GuestOps::Options o;
  o.random_device = "/dev/null";
  GuestOps ops(o);
  EXPECT_EQ(ops.ReseedRandom("").code(), Code::kInvalidArgument);
  Status st = ops.ReseedRandom("0123456789abcdef");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("RNDADDENTROPY"), std::string::npos) << st.message();
  o.random_device = sys_.root() + "/no-such-device";
  EXPECT_EQ(GuestOps(o).ReseedRandom("x").code(), Code::kNotFound);
}

TEST_F(GuestOpsTest, RenewIdentityWritesAFreshMachineIdAndDrawsTheBootId) {
  GuestOps::Options o;
  o.machine_id_path = sys_.root() + "/machine-id";
  o.boot_id_path = sys_.root() + "/boot_id";
  sys_.Write("boot_id", "6a0bd1a4-5cbb-4c1e-9a0f-6e2e7b2f5b1d\n");
  GuestOps ops(o);
  ASSERT_TRUE(ops.RenewIdentity().ok());
  std::string first = sys_.Read("machine-id");
  ASSERT_EQ(first.size(), 33u) << first;
  EXPECT_EQ(first.find_first_not_of("0123456789abcdef"), 32u) << first;
  EXPECT_EQ(first.back(), '\n');
  ASSERT_TRUE(ops.RenewIdentity().ok());
  EXPECT_NE(sys_.Read("machine-id"), first) << "a renewed machine-id must differ";
  EXPECT_FALSE(std::filesystem::exists(o.machine_id_path + ".new"));

  // No boot_id to read is an error naming it; host-safe mode changes nothing.
  o.boot_id_path = sys_.root() + "/no-boot-id";
  Status st = GuestOps(o).RenewIdentity();
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find("no-boot-id"), std::string::npos) << st.message();
  o.allow_system_changes = false;
  o.machine_id_path = sys_.root() + "/untouched";
  EXPECT_TRUE(GuestOps(o).RenewIdentity().ok());
  EXPECT_FALSE(std::filesystem::exists(o.machine_id_path));
}

}  // namespace
}  // namespace vmf::agent
