// VM logic against a fake hypervisor and an in-process agent: each step of
// VM::Create failing leaves nothing behind, hotplug rounding, Stop, Release
// and Attach. No QEMU.
#include "vm/vm.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "common/census.h"
#include "common/io.h"
#include "mocks/fake_vm_env.h"
#include "support/wait_until.h"

namespace vmf::testing {
namespace {

using ::testing::HasSubstr;

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override { fds_ = CountFds(::getpid()); }
  // Nothing of any VM is left: no process, no dir, no agent, no fd.
  void ExpectNothingLeft() {
    EXPECT_EQ(env_.Processes(), 0);
    EXPECT_EQ(env_.VmDirs(), 0);
    EXPECT_EQ(env_.proxies().live_agents(), 0u);
    // The agent threads close their fds as they stop.
    for (int i = 0; i < 100 && CountFds(::getpid()) != fds_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(CountFds(::getpid()), fds_);
  }
  Result<std::unique_ptr<VM>> Create(const VMConfig& c, StepTimes* times = nullptr,
                                     CancelToken* cancel = nullptr) {
    return VM::Create(c, times, cancel, env_.Deps());
  }

  FakeVmEnv env_;
  int fds_ = 0;
};

TEST_F(VmTest, CreateRunsTheStepsInOrderAndStopLeavesNothing) {
  StepTimes steps;
  auto vm = Create(env_.Config(), &steps);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  std::vector<std::string> names;
  for (const auto& [name, d] : steps) names.push_back(name);
  EXPECT_THAT(names, ::testing::ElementsAre("qemu start", "proxy start", "guest boot + agent ready"));
  EXPECT_TRUE((*vm)->Healthy());
  EXPECT_GT((*vm)->vmm_pid(), 0);
  EXPECT_GT((*vm)->proxy_pid(), 0);
  EXPECT_EQ((*vm)->handle().backend, "fake");
  EXPECT_EQ(env_.Processes(), 2);
  (*vm)->Stop();
  (*vm)->Stop();  // idempotent
  ExpectNothingLeft();
}

TEST_F(VmTest, BadConfigIsRefusedBeforeAnythingStarts) {
  VMConfig c = env_.Config();
  c.hypervisor.memory_mib = 16;
  auto vm = Create(c);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(vm.status().message(), HasSubstr("hypervisor.memory_mib"));
  EXPECT_EQ(env_.backend().created(), 0);
  ExpectNothingLeft();
}

TEST_F(VmTest, UnknownBackendIsNamed) {
  VMConfig c = env_.Config();
  c.hypervisor.backend = "xen";
  auto vm = VM::Create(c);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kNotFound);
  EXPECT_THAT(vm.status().message(), HasSubstr("'xen'"));
}

TEST_F(VmTest, CreateFailsAtEachStepAndLeavesNothing) {
  struct Case {
    const char* step;
    std::function<void(FakeVmEnv&)> arm;
    Code code;
  };
  const std::vector<Case> cases = {
      {"hypervisor create", [](FakeVmEnv& e) { e.backend().FailCreates(1, Internal("no create")); },
       Code::kInternal},
      {"vm process start", [](FakeVmEnv& e) { e.backend().FailStarts(1, Unavailable("no start")); },
       Code::kUnavailable},
      {"proxy start", [](FakeVmEnv& e) { e.proxies().FailLaunches(1); }, Code::kUnavailable},
      {"agent ready", [](FakeVmEnv& e) { e.proxies().SilenceAgents(true); }, Code::kDeadlineExceeded},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.step);
    c.arm(env_);
    VMConfig config = env_.Config();
    config.agent.boot_timeout = std::chrono::milliseconds(500);
    auto vm = Create(config);
    ASSERT_FALSE(vm.ok());
    EXPECT_EQ(vm.status().code(), c.code) << vm.status().ToString();
    env_.proxies().SilenceAgents(false);
    ExpectNothingLeft();
  }
}

TEST_F(VmTest, CancelledCreateLeavesNothing) {
  CancelToken cancel;
  cancel.Cancel();
  auto vm = Create(env_.Config(), nullptr, &cancel);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kCancelled);
  ExpectNothingLeft();
}

TEST_F(VmTest, CancelAfterCreateKillsTheVmProcess) {
  CancelToken cancel;
  auto vm = Create(env_.Config(), nullptr, &cancel);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  cancel.Cancel();
  for (int i = 0; i < 100 && (*vm)->Running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE((*vm)->Running());
  EXPECT_FALSE((*vm)->Healthy());
  vm->reset();
  ExpectNothingLeft();
}

TEST_F(VmTest, CallsOnADeadVmSayWhichProcessDied) {
  auto vm = Create(env_.Config());
  ASSERT_TRUE(vm.ok());
  ::kill((*vm)->vmm_pid(), SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return !(*vm)->Running(); }));
  Status st = (*vm)->WithCauses(Unavailable("connection closed"));
  EXPECT_THAT(st.message(), HasSubstr("is no longer running"));
  EXPECT_FALSE((*vm)->Pause().ok());
}

TEST(HotplugMemorySizeTest, RoundsUpToWholeGuestBlocks) {
  constexpr uint64_t k128 = 128u << 20, k256 = 256u << 20;
  EXPECT_EQ(HotplugMemorySize(1, k128), 128u);
  EXPECT_EQ(HotplugMemorySize(128, k128), 128u);
  EXPECT_EQ(HotplugMemorySize(129, k128), 256u);
  EXPECT_EQ(HotplugMemorySize(44, k256), 256u);
  EXPECT_EQ(HotplugMemorySize(300, k256), 512u);
  // A guest that says nothing, or less than 1 MiB: 128 MiB blocks.
  EXPECT_EQ(HotplugMemorySize(100, 0), 128u);
  EXPECT_EQ(HotplugMemorySize(100, 4096), 128u);
}

class GrowTest : public VmTest {};

TEST_F(GrowTest, GrowToAddsRoundedMemoryAndCpusAndOnlinesThem) {
  FakeVmEnv env(256u << 20);  // guest memory blocks of 256 MiB
  auto vm = VM::Create(env.Config(), nullptr, nullptr, env.Deps());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ((*vm)->memory_mib(), 256u);
  auto grew = (*vm)->GrowTo(3, 300);  // 44 MiB more: one 256 MiB block
  ASSERT_TRUE(grew.ok()) << grew.status().ToString();
  EXPECT_TRUE(*grew);
  EXPECT_EQ((*vm)->cpus(), 3u);
  EXPECT_EQ((*vm)->memory_mib(), 512u);
  EXPECT_EQ(env.backend().memory_added_mib(), 256u);
  EXPECT_EQ(env.guest().OnlineCpus(), 2) << "the hot-added vCPUs were onlined by the agent";
  EXPECT_EQ(env.guest().OnlineMemoryBlocks(), 2);
  // Already that big: nothing to do.
  auto again = (*vm)->GrowTo(2, 512);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST_F(GrowTest, GrowingPastTheCeilingIsRefused) {
  VMConfig c = env_.Config();
  c.hypervisor.max_memory_mib = 300;
  auto vm = Create(c);
  ASSERT_TRUE(vm.ok());
  auto grew = (*vm)->GrowTo(1, 300);  // rounds to 128 MiB more: 384 > 300
  ASSERT_FALSE(grew.ok());
  EXPECT_EQ(grew.status().code(), Code::kResourceExhausted);
  EXPECT_EQ((*vm)->memory_mib(), 256u);
}

TEST_F(VmTest, ReleaseKeepsEverythingAndAttachTakesItOver) {
  auto vm = Create(env_.Config());
  ASSERT_TRUE(vm.ok());
  VMHandle h = (*vm)->Release();
  vm->reset();
  EXPECT_EQ(env_.Processes(), 2) << "a released VM keeps running";
  EXPECT_EQ(env_.VmDirs(), 1);

  // The handle survives the daemon's wire form and its records.
  vmfactory::v1::VM proto;
  h.ToProto(&proto);
  VMHandle back = VMHandle::FromProto(proto);
  auto from_json = VMHandle::FromJson(h.ToJson(), "record");
  ASSERT_TRUE(from_json.ok());
  for (const VMHandle* x : {&back, &*from_json}) {
    EXPECT_EQ(x->id, h.id);
    EXPECT_EQ(x->vmm_pid, h.vmm_pid);
    EXPECT_EQ(x->proxy_url, h.proxy_url);
    EXPECT_EQ(x->backend, "fake");
    EXPECT_EQ(x->cgroup_dirs, h.cgroup_dirs);
  }

  auto taken = VM::Attach(back, env_.Config(), env_.Deps());
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_TRUE((*taken)->agent().Check(Deadline(std::chrono::seconds(5))).ok());
  EXPECT_EQ((*taken)->cgroup().dirs(), h.cgroup_dirs);
  (*taken)->Stop();
  ExpectNothingLeft();
  for (const auto& d : h.cgroup_dirs) EXPECT_FALSE(std::filesystem::exists(d)) << d;
}

TEST_F(VmTest, AttachRefusesAHandleWhoseCgroupIsNotAVms) {
  auto vm = Create(env_.Config());
  ASSERT_TRUE(vm.ok());
  VMHandle h = (*vm)->handle();
  h.cgroup_dirs = {env_.runtime()};  // Stop() would remove it
  auto taken = VM::Attach(h, env_.Config(), env_.Deps());
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(taken.status().message(), HasSubstr("cgroup dir"));
  EXPECT_TRUE((*vm)->Healthy());
}

// The VM's processes in a cgroup of their own, against this host's cgroups
// (skipped where there are none we may use).
class VmLimitsTest : public VmTest {
 protected:
  static bool InGroup(pid_t pid, const std::string& id) {
    auto text = ReadFile("/proc/" + std::to_string(pid) + "/cgroup");
    return text.ok() && text->find("/vmfactory/" + id + "\n") != std::string::npos;
  }
};

TEST_F(VmLimitsTest, QemuAndTheProxyAreInTheVmsCgroupWhichGoesAtStop) {
  VMConfig c = env_.Config();
  c.limits.memory_overhead_mib = 64;
  c.limits.pids_max = 32;
  auto vm = Create(c);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  if (!(*vm)->cgroup().valid()) GTEST_SKIP() << "resource limits " << (*vm)->limits_state();
  EXPECT_THAT((*vm)->limits_state(), ::testing::StartsWith("applied (cgroup v"));
  const std::vector<std::string> dirs = (*vm)->cgroup().dirs();
  EXPECT_EQ((*vm)->handle().cgroup_dirs, dirs);
  EXPECT_TRUE(InGroup((*vm)->vmm_pid(), (*vm)->id()));
  EXPECT_TRUE(InGroup((*vm)->proxy_pid(), (*vm)->id()));
  EXPECT_FALSE(InGroup(::getpid(), (*vm)->id()));
  CgroupUsage u = (*vm)->cgroup().Usage();
  EXPECT_EQ(u.memory_limit_bytes, uint64_t{256 + 64} << 20) << "guest memory + overhead";
  EXPECT_GT(u.memory_bytes, 0u);
  EXPECT_EQ((*vm)->cgroup().limits().cpus, 2.0) << "1 vCPU + 1 for QEMU's own threads";
  EXPECT_EQ((*vm)->cgroup().limits().pids, 32u);
  EXPECT_EQ((*vm)->cgroup().LimitHit(), std::nullopt);
  (*vm)->Stop();
  for (const auto& d : dirs) EXPECT_FALSE(std::filesystem::exists(d)) << d;
  ExpectNothingLeft();
}

TEST_F(VmLimitsTest, GrowingRaisesTheLimits) {
  FakeVmEnv env(256u << 20);
  auto vm = VM::Create(env.Config(), nullptr, nullptr, env.Deps());
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  if (!(*vm)->cgroup().valid()) GTEST_SKIP() << "resource limits " << (*vm)->limits_state();
  ASSERT_TRUE((*vm)->GrowTo(3, 300).ok());
  EXPECT_EQ((*vm)->cgroup().Usage().memory_limit_bytes, uint64_t{512 + 256} << 20);
  EXPECT_EQ((*vm)->cgroup().limits().cpus, 4.0);
}

TEST_F(VmLimitsTest, LimitsOffMeansNoCgroup) {
  VMConfig c = env_.Config();
  c.limits.enabled = false;
  auto vm = Create(c);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_FALSE((*vm)->cgroup().valid());
  EXPECT_EQ((*vm)->limits_state(), "off");
  EXPECT_TRUE((*vm)->handle().cgroup_dirs.empty());
}

TEST_F(VmTest, AttachRefusesAHandleWhosePidsAreNotTheVms) {
  auto vm = Create(env_.Config());
  ASSERT_TRUE(vm.ok());
  VMHandle h = (*vm)->handle();
  h.vmm_pid = ::getpid();
  auto taken = VM::Attach(h, env_.Config(), env_.Deps());
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(taken.status().message(), HasSubstr("is not its VM process"));
}

TEST_F(VmTest, AssignSandboxLinksAndMovesAndUnlinksOnStop) {
  auto vm = Create(env_.Config());
  ASSERT_TRUE(vm.ok());
  ASSERT_TRUE((*vm)->AssignSandbox("sb1").ok());
  const std::string l1 = env_.runtime() + "/sandbox/sb1", l2 = env_.runtime() + "/sandbox/sb2";
  EXPECT_TRUE(std::filesystem::is_symlink(l1));
  ASSERT_TRUE((*vm)->AssignSandbox("sb1").ok()) << "the same id again";
  EXPECT_TRUE(std::filesystem::is_symlink(l1));
  ASSERT_TRUE((*vm)->AssignSandbox("sb2").ok());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(l1)));
  EXPECT_TRUE(std::filesystem::is_symlink(l2));
  EXPECT_FALSE((*vm)->AssignSandbox("../x").ok());
  (*vm)->Stop();
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(l2)));
}

}  // namespace
}  // namespace vmf::testing
