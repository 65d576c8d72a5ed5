// Resource limits on real QEMU ([limits], common/cgroup.h): a VM's QEMU and
// proxy run in a cgroup of their own with its limits, which grow with
// hotplug; a QEMU that outgrows its memory limit is killed by it, the caller
// is told so, a neighbour keeps working, and no cgroup, process or dir is
// left.
#include <glob.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/cgroup.h"
#include "factory/factory.h"
#include "factory/template.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

std::string ProcCgroup(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The VM groups in the dir that holds `dir` (the vmfactory group of one hierarchy).
std::set<std::string> GroupsBeside(const std::string& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(dir).parent_path(), ec)) {
    if (e.is_directory()) names.insert(e.path().filename().string());
  }
  return names;
}

// Whether a VM named id lives in some test process's runtime dir.
bool SomeTestsVm(const std::string& id) {
  glob_t g{};
  bool found = false;
  for (const char* pattern : {"/tmp/vmf-it-*/vm/", "/tmp/vmf-it-*/daemon/pool/vm/"}) {
    if (::glob((pattern + id).c_str(), 0, nullptr, &g) == 0) found = true;
    ::globfree(&g);
  }
  return found;
}

// Skips where this host gives us no cgroups (a VM then runs without limits
// and says so in limits_state()).
#define SKIP_WITHOUT_LIMITS(vm)                                                \
  if ((vm).limits_state().rfind("applied", 0) != 0) {                          \
    GTEST_SKIP() << "no usable cgroups on this host: " << (vm).limits_state(); \
  }

TEST(LimitsTest, QemuAndProxyRunInTheVmsCgroupWithItsLimitsWhichGrowWithHotplug) {
  VMConfig c = TestConfig();
  auto made = CloneFromTemplate(SharedTemplate(), c, nullptr, nullptr);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<VM> vm = std::move(*made);
  SKIP_WITHOUT_LIMITS(*vm);
  const std::string id = vm->id();
  std::vector<std::string> dirs = VmCgroup::DirsFor(id);
  ASSERT_FALSE(dirs.empty());
  VMHandle h = vm->handle();
  EXPECT_EQ(h.cgroup_dirs, dirs);
  // Both processes are in it (every hierarchy lists the VM's group).
  for (pid_t pid : {h.vmm_pid, h.proxy_pid}) {
    EXPECT_NE(ProcCgroup(pid).find("/vmfactory/" + id), std::string::npos)
        << "pid " << pid << ": " << ProcCgroup(pid);
  }
  CgroupUsage u = VmCgroup::UsageOf(dirs);
  const uint64_t overhead = uint64_t{c.limits.memory_overhead_mib} << 20;
  EXPECT_EQ(u.memory_limit_bytes, (uint64_t{256} << 20) + overhead);
  EXPECT_GT(u.memory_bytes, 0u);
  EXPECT_GT(u.pids, 1u);  // QEMU's threads and the proxy
  EXPECT_EQ(u.oom_kills, 0u);

  // Hotplugged memory raises the limit by as much.
  ASSERT_TRUE(vm->AddMemory(256).ok());
  EXPECT_EQ(VmCgroup::UsageOf(dirs).memory_limit_bytes, (uint64_t{512} << 20) + overhead);
  auto r = Exec(*vm, {"true"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();

  vm->Stop();
  vm.reset();
  EXPECT_TRUE(VmCgroup::DirsFor(id).empty()) << "the VM's cgroup is left";
}

TEST(LimitsTest, AQemuOverItsMemoryLimitIsKilledTheCallerIsToldAndANeighbourKeepsWorking) {
  auto neighbour = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(neighbour.ok()) << neighbour.status().ToString();
  SKIP_WITHOUT_LIMITS(**neighbour);

  // No room above the guest's RAM: QEMU's own memory pushes it over while
  // the guest boots, or, if it does not, once the guest fills its memory.
  VMConfig c = TestConfig();
  c.limits.memory_overhead_mib = 0;
  const std::string group_dir = (*neighbour)->handle().cgroup_dirs.at(0);
  const std::set<std::string> before = GroupsBeside(group_dir);
  auto vm = VM::Create(c);
  Status failure;
  std::string id;
  if (!vm.ok()) {
    failure = vm.status();
  } else {
    id = (*vm)->id();
    auto fill = Exec(**vm, {"sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=1024; sleep 5"});
    failure = fill.ok() ? Internal("the guest filled its memory and QEMU survived") : fill.status();
  }
  EXPECT_NE(failure.message().find("killed by its cgroup's memory limit (256 MiB)"), std::string::npos)
      << failure.ToString();
  if (vm.ok()) vm->reset();

  // The neighbour did not notice.
  auto r = Exec(**neighbour, {"echo", "still here"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->out, "still here\n");
  std::string neighbour_id = (*neighbour)->id();
  neighbour->reset();

  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
  EXPECT_EQ(CountVmDirs(), 0);
  if (!id.empty()) {
    EXPECT_TRUE(VmCgroup::DirsFor(id).empty());
  }
  EXPECT_TRUE(VmCgroup::DirsFor(neighbour_id).empty());
  // The killed VM's group is gone too (whatever its id): every group made
  // since is another test's live VM.
  for (const std::string& name : GroupsBeside(group_dir)) {
    if (before.count(name) != 0) continue;
    EXPECT_TRUE(SomeTestsVm(name)) << "cgroup " << name << " left without a VM";
  }
}

}  // namespace
}  // namespace vmf::testing
