// Failures while creating a VM: each is a clear error, and nothing is left.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "helpers.h"

namespace vmf::testing {
namespace {

void ExpectNothingLeft(int fds_before) {
  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
  EXPECT_EQ(CountVmDirs(), 0);
  EXPECT_EQ(CountOpenFds(), fds_before);
}

TEST(VmFaultTest, MissingKernelNamesTheField) {
  int fds = CountOpenFds();
  VMConfig c = TestConfig();
  c.hypervisor.kernel = "/nonexistent/vmlinuz";
  auto vm = VM::Create(c);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kNotFound);
  EXPECT_NE(vm.status().message().find("hypervisor.kernel"), std::string::npos) << vm.status().ToString();
  EXPECT_NE(vm.status().message().find("/nonexistent/vmlinuz"), std::string::npos);
  ExpectNothingLeft(fds);
}

TEST(VmFaultTest, CorruptKernelIsReportedWithQemusWords) {
  int fds = CountOpenFds();
  std::string bad = TestRuntimeDir() + "-badkernel";
  {
    std::ofstream f(bad);
    f << "this is not a kernel";
  }
  VMConfig c = TestConfig();
  c.hypervisor.kernel = bad;
  c.agent.boot_timeout = std::chrono::seconds(30);
  auto vm = VM::Create(c);
  std::filesystem::remove(bad);
  ASSERT_FALSE(vm.ok());
  EXPECT_NE(vm.status().message().find("QEMU"), std::string::npos) << vm.status().ToString();
  ExpectNothingLeft(fds);
}

TEST(VmFaultTest, QemuKilledDuringBoot) {
  int fds = CountOpenFds();
  auto fut = std::async(std::launch::async, [] { return VM::Create(TestConfig()); });
  // Wait for QEMU to appear, then kill it while the guest boots.
  pid_t qemu = -1;
  for (int i = 0; i < 500 && qemu < 0; ++i) {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream f(e.path() / "cmdline", std::ios::binary);
      std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (cmd.rfind("qemu-system", 0) != std::string::npos || cmd.find("/qemu-system") != std::string::npos) {
        if (cmd.find(TestRuntimeDir()) != std::string::npos) qemu = std::stoi(name);
      }
    }
    if (qemu < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(qemu, 0) << "QEMU never started";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(qemu, SIGKILL);
  auto vm = fut.get();
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kUnavailable) << vm.status().ToString();
  ExpectNothingLeft(fds);
}

TEST(VmFaultTest, AgentThatNeverAnswers) {
  int fds = CountOpenFds();
  VMConfig c = TestConfig();
  // The agent waits for a port of that name, which does not exist: it never serves.
  c.hypervisor.kernel_params = "vmf.port=nonexistent.0";
  c.agent.boot_timeout = std::chrono::seconds(15);
  auto start = Clock::now();
  auto vm = VM::Create(c);
  auto took = Clock::now() - start;
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kDeadlineExceeded) << vm.status().ToString();
  EXPECT_NE(vm.status().message().find("agent"), std::string::npos) << vm.status().ToString();
  EXPECT_LT(took, std::chrono::seconds(25));
  ExpectNothingLeft(fds);
}

TEST(VmFaultTest, BadConfigValuesNameTheField) {
  struct Case {
    std::function<void(VMConfig&)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](VMConfig& c) { c.hypervisor.vcpus = 0; }, "hypervisor.vcpus"},
      {[](VMConfig& c) {
         c.hypervisor.vcpus = 8;
         c.hypervisor.max_vcpus = 4;
       },
       "hypervisor.max_vcpus"},
      {[](VMConfig& c) { c.hypervisor.memory_mib = 16; }, "hypervisor.memory_mib"},
      {[](VMConfig& c) { c.hypervisor.max_memory_mib = 128; }, "hypervisor.max_memory_mib"},
      {[](VMConfig& c) { c.hypervisor.initrd = ""; }, "hypervisor.initrd"},
      {[](VMConfig& c) { c.hypervisor.qemu.path = "/nonexistent/qemu"; }, "hypervisor.qemu.path"},
      {[](VMConfig& c) { c.hypervisor.qemu.machine = "virt"; }, "hypervisor.qemu.machine"},
      {[](VMConfig& c) { c.proxy.path = "/nonexistent/proxy"; }, "proxy.path"},
      {[](VMConfig& c) { c.runtime_dir = "relative/dir"; }, "runtime_dir"},
      {[](VMConfig& c) { c.hypervisor.kernel_params = "a\nb"; }, "hypervisor.kernel_params"},
  };
  for (auto& tc : cases) {
    VMConfig c = TestConfig();
    tc.mutate(c);
    auto vm = VM::Create(c);
    ASSERT_FALSE(vm.ok()) << tc.field;
    EXPECT_NE(vm.status().message().find(tc.field), std::string::npos) << vm.status().ToString();
  }
  EXPECT_EQ(CountVmDirs(), 0);
}

}  // namespace
}  // namespace vmf::testing
