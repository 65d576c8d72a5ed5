// The seed's VM operations against a real QEMU: pause/resume, hotplug,
// reseed, clock, save, disconnect, sandbox links.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>

#include "common/scoped_dir.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

std::unique_ptr<VM> Boot(VMConfig c = TestConfig()) {
  auto vm = VM::Create(c);
  EXPECT_TRUE(vm.ok()) << vm.status().ToString();
  return vm.ok() ? std::move(vm).value() : nullptr;
}

long MemTotalKiB(VM& vm) {
  auto r = Exec(vm, {"sh", "-c", "grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"});
  return r.ok() ? std::stol(r->out) : -1;
}

TEST(VmOpsTest, PauseStopsTheGuestAndResumeContinues) {
  auto vm = Boot();
  ASSERT_TRUE(vm);
  ASSERT_TRUE(vm->Pause().ok());
  Status st = vm->agent().Check(Deadline(std::chrono::milliseconds(1500)));
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded) << st.ToString();
  ASSERT_TRUE(vm->Resume().ok());
  st = vm->agent().Check(Deadline(std::chrono::seconds(10)));
  EXPECT_TRUE(st.ok()) << st.ToString();
  // Start on a running VM is harmless.
  EXPECT_TRUE(vm->Start().ok());
}

TEST(VmOpsTest, HotplugShowsInsideTheGuest) {
  auto vm = Boot();
  ASSERT_TRUE(vm);
  auto nproc = Exec(*vm, {"nproc"});
  ASSERT_TRUE(nproc.ok()) << nproc.status().ToString();
  EXPECT_EQ(nproc->out, "1\n");
  long mem_before = MemTotalKiB(*vm);

  Status st = vm->AddCPUs(1);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = vm->AddMemory(128);
  ASSERT_TRUE(st.ok()) << st.ToString();
  st = vm->OnlineCPUMemory();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(vm->cpus(), 2u);
  EXPECT_EQ(vm->memory_mib(), 384u);

  nproc = Exec(*vm, {"nproc"});
  ASSERT_TRUE(nproc.ok()) << nproc.status().ToString();
  EXPECT_EQ(nproc->out, "2\n");
  long mem_after = MemTotalKiB(*vm);
  EXPECT_GE(mem_after - mem_before, 120 * 1024) << mem_before << " -> " << mem_after;

  // Beyond the ceiling: a clear error, and the VM still works.
  st = vm->AddCPUs(10);
  EXPECT_EQ(st.code(), Code::kResourceExhausted) << st.ToString();
  EXPECT_TRUE(Exec(*vm, {"true"}).ok());
}

TEST(VmOpsTest, ReseedAndClock) {
  auto vm = Boot();
  ASSERT_TRUE(vm);
  Status st = vm->ReseedRNG();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(vm->agent().ReseedRandomDev("").code(), Code::kInvalidArgument);

  st = vm->SyncClock();
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto r = Exec(*vm, {"date", "+%s"});
  ASSERT_TRUE(r.ok());
  long guest = std::stol(r->out);
  long host = static_cast<long>(::time(nullptr));
  EXPECT_LE(std::labs(guest - host), 2) << "guest " << guest << " host " << host;
}

TEST(VmOpsTest, SaveWritesDeviceStateOfAPausedTemplateVm) {
  auto tdir = ScopedDir::Create(TestRuntimeDir() + "/template", 0700);
  ASSERT_TRUE(tdir.ok());
  VMConfig c = TestConfig();
  c.hypervisor.boot = BootMode::kTemplateSource;
  c.hypervisor.memory_path = tdir->path() + "/memory";
  c.hypervisor.device_state_path = tdir->path() + "/state";
  auto vm = Boot(c);
  ASSERT_TRUE(vm);
  vm->Disconnect();
  ASSERT_TRUE(vm->Pause().ok());
  Status st = vm->Save();
  ASSERT_TRUE(st.ok()) << st.ToString();
  struct stat sb {};
  ASSERT_EQ(::stat(c.hypervisor.device_state_path.c_str(), &sb), 0);
  EXPECT_GT(sb.st_size, 10000);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(c.hypervisor.memory_path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_size, 256 << 20);
  // Disconnected: agent calls are refused, Stop still cleans up.
  EXPECT_FALSE(vm->ReseedRNG().ok());
  vm->Stop();
  EXPECT_EQ(CountProcessesMentioning(vm->id()), 0);
}

TEST(VmOpsTest, AssignSandboxLinksAndRejectsBadIds) {
  auto vm = Boot();
  ASSERT_TRUE(vm);
  Status st = vm->AssignSandbox("sb-1");
  ASSERT_TRUE(st.ok()) << st.ToString();
  std::string link = TestRuntimeDir() + "/sandbox/sb-1";
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_symlink(link, ec));
  EXPECT_EQ(std::filesystem::read_symlink(link, ec).string(), vm->dir());
  EXPECT_TRUE(std::filesystem::exists(link + "/proxy.sock", ec));

  for (const std::string& bad : std::vector<std::string>{"../x", "a/b", "", "..", ".hidden",
                                                         std::string(65, 'a'), std::string("a\0b", 3)}) {
    Status s = vm->AssignSandbox(bad);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << "id '" << bad << "': " << s.ToString();
  }
  EXPECT_FALSE(std::filesystem::exists(TestRuntimeDir() + "/x", ec));
  vm->Stop();
  EXPECT_FALSE(std::filesystem::exists(link, ec)) << "the link goes with the VM";
}

TEST(VmOpsTest, StopLeavesNothingBehind) {
  int fds_before = CountOpenFds();
  {
    auto vm = Boot();
    ASSERT_TRUE(vm);
    EXPECT_EQ(CountProcessesMentioning(vm->id()), 2) << "QEMU and the proxy";
    struct stat sb {};
    ASSERT_EQ(::stat(vm->dir().c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0700u);
    ASSERT_EQ(::stat((vm->dir() + "/proxy.sock").c_str(), &sb), 0);
    EXPECT_EQ(sb.st_mode & 0777, 0600u);
    std::string id = vm->id();
    vm->Stop();
    EXPECT_EQ(CountProcessesMentioning(id), 0);
    vm->Stop();
  }
  EXPECT_EQ(CountVmDirs(), 0);
  EXPECT_EQ(CountOpenFds(), fds_before);
}

}  // namespace
}  // namespace vmf::testing
