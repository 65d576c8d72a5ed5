// Factory, template and pool logic against a fake hypervisor and an
// in-process agent: where each VM comes from, the template factory's fall
// back to a cold boot, the pool's hit/miss, fit, backoff and replacement.
// No QEMU.
#include "factory/factory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "factory/cache.h"
#include "factory/template.h"
#include "mocks/fake_vm_env.h"
#include "support/wait_until.h"

namespace vmf::testing {
namespace {

using ::testing::HasSubstr;

bool HasStep(const StepTimes& steps, const std::string& name) {
  for (const auto& [n, d] : steps) {
    if (n == name) return true;
  }
  return false;
}

// Records what a pool reports.
class RecordingObserver : public PoolObserver {
 public:
  void PoolSize(int ready, int) override { last_size = ready; }
  void Refilled(VmSource source, const Status& st) override {
    std::lock_guard<std::mutex> l(mu);
    (st.ok() ? made : failed)++;
    last_source = source;
  }
  void Replaced() override { replaced++; }
  std::mutex mu;
  std::atomic<int> last_size{-1};
  std::atomic<int> made{0}, failed{0}, replaced{0};
  VmSource last_source = VmSource::kPool;
};

TEST(SourceNameTest, NamesTheApiUses) {
  EXPECT_EQ(SourceName(VmSource::kPool), "cache");
  EXPECT_EQ(SourceName(VmSource::kTemplate), "template");
  EXPECT_EQ(SourceName(VmSource::kColdBoot), "direct");
}

TEST(DirectFactoryTest, ColdBootsNamedAfterTheirId) {
  FakeVmEnv env;
  auto f = NewDirectFactory(env.Config(), env.Deps());
  auto got = f->GetVM(env.Config());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->source, VmSource::kColdBoot);
  EXPECT_EQ(f->State().base, VmSource::kColdBoot);
  EXPECT_FALSE(f->State().pool.has_value());
}

class TemplateFactoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = env_.runtime() + "/template";
    TemplateOptions o;
    o.mount_tmpfs = false;
    o.deps = env_.Deps();
    auto t = CreateTemplate(env_.Config(), root_, o);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    info_ = *t;
  }
  FakeVmEnv env_;
  std::string root_;
  TemplateInfo info_;
};

TEST_F(TemplateFactoryTest, InitLeavesATemplateAndNoVm) {
  EXPECT_EQ(info_.hypervisor.backend, "fake");
  EXPECT_EQ(info_.memory_bytes, 256u << 20);
  EXPECT_GT(info_.state_bytes, 0u);
  EXPECT_EQ(env_.Processes(), 0);
  EXPECT_EQ(env_.VmDirs(), 0);
  TemplateOptions o;
  o.mount_tmpfs = false;
  o.deps = env_.Deps();
  auto again = CreateTemplate(env_.Config(), root_, o);
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
}

TEST_F(TemplateFactoryTest, ClonesWhatFitsAndColdBootsWhatDoesNot) {
  auto f = NewTemplateFactory(env_.Config(), root_, env_.Deps());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  StepTimes steps;
  auto clone = (*f)->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(clone.ok()) << clone.status().ToString();
  EXPECT_EQ(clone->source, VmSource::kTemplate);
  EXPECT_TRUE(HasStep(steps, "restore + resume"));
  EXPECT_TRUE(HasStep(steps, "reseed, clock, hostname"));

  // Bigger than the template: a clone plus hotplug.
  VMConfig big = env_.Config();
  big.hypervisor.memory_mib = 512;
  steps.clear();
  auto grown = (*f)->GetVM(big, &steps);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->source, VmSource::kTemplate);
  EXPECT_TRUE(HasStep(steps, "hotplug"));
  EXPECT_EQ(grown->vm->memory_mib(), 512u);

  // Another kernel command line: the template cannot serve it.
  VMConfig other = env_.Config();
  other.hypervisor.kernel_params = "vmf.other=1";
  steps.clear();
  auto cold = (*f)->GetVM(other, &steps);
  ASSERT_TRUE(cold.ok()) << cold.status().ToString();
  EXPECT_EQ(cold->source, VmSource::kColdBoot);
  EXPECT_FALSE(HasStep(steps, "restore + resume"));

  FactoryState s = (*f)->State();
  EXPECT_EQ(s.base, VmSource::kTemplate);
  EXPECT_EQ(s.template_generation, info_.generation);
  EXPECT_TRUE(s.template_error.empty());
}

TEST_F(TemplateFactoryTest, ABrokenTemplateIsAnErrorAndNothingStarts) {
  auto f = NewTemplateFactory(env_.Config(), root_, env_.Deps());
  ASSERT_TRUE(f.ok());
  std::filesystem::remove(info_.state_path());
  const int created = env_.backend().created();
  auto vm = (*f)->GetVM(env_.Config());
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kDataLoss) << "damage, not 'no template'";
  EXPECT_THAT(vm.status().message(), HasSubstr(info_.state_path()));
  EXPECT_EQ(env_.backend().created(), created);
  EXPECT_FALSE((*f)->State().template_error.empty());
}

TEST_F(TemplateFactoryTest, NoTemplateIsNotFound) {
  ASSERT_TRUE(DestroyTemplate(root_).ok());
  auto f = NewTemplateFactory(env_.Config(), root_, env_.Deps());
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kNotFound);
}

TEST_F(TemplateFactoryTest, AFailedRestoreLeavesNothing) {
  env_.backend().FailRestores(1, DataLoss("restore of the VM state failed"));
  auto f = NewTemplateFactory(env_.Config(), root_, env_.Deps());
  ASSERT_TRUE(f.ok());
  auto vm = (*f)->GetVM(env_.Config());
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.status().code(), Code::kDataLoss);
  EXPECT_EQ(env_.Processes(), 0);
  EXPECT_EQ(env_.VmDirs(), 0);
}

// A file that starts like an x86 bzImage: `sects` setup sectors, then a body.
std::string FakeBzImage(unsigned char sects, size_t size) {
  std::string k(size, 'k');
  k[0x1f1] = static_cast<char>(sects);
  k.replace(0x202, 4, "HdrS");
  return k;
}

TEST(BootStubTest, KeepsTheSetupSectorsOfABzImageAndNoKernel) {
  FakeVmEnv env;
  const std::string path = env.runtime() + "/bzImage";
  const std::string kernel = FakeBzImage(2, 200000);
  std::ofstream(path) << kernel;
  auto stub = BootStubOf(path);
  ASSERT_TRUE(stub.ok()) << stub.status().ToString();
  ASSERT_EQ(stub->size(), 3 * 512 + 4096u);
  EXPECT_EQ(stub->substr(0, 3 * 512), kernel.substr(0, 3 * 512));
  EXPECT_EQ(stub->substr(3 * 512), std::string(4096, '\0'));

  std::ofstream(path, std::ios::trunc) << "not a kernel";
  EXPECT_EQ(BootStubOf(path).status().code(), Code::kNotFound);
  std::ofstream(path, std::ios::trunc) << FakeBzImage(200, 4096);  // setup larger than the file
  EXPECT_EQ(BootStubOf(path).status().code(), Code::kNotFound);
  EXPECT_EQ(BootStubOf(env.runtime() + "/missing").status().code(), Code::kNotFound);
}

TEST(BootStubTest, ClonesOfABzImageTemplateLoadTheStubAndATamperedStubIsRefused) {
  FakeVmEnv env;
  VMConfig config = env.Config();
  std::ofstream(config.hypervisor.kernel, std::ios::trunc) << FakeBzImage(4, 100000);
  TemplateOptions o;
  o.mount_tmpfs = false;
  o.deps = env.Deps();
  const std::string root = env.runtime() + "/template";
  // A private umask (a service's UMask=0077) must not make the stub
  // unreadable to the VMs' own uids.
  const mode_t old_umask = ::umask(077);
  auto t = CreateTemplate(config, root, o);
  ::umask(old_umask);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->boot_stub_bytes, 5 * 512 + 4096u);
  struct stat st {};
  ASSERT_EQ(::stat(t->boot_stub_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u) << "readable by every VM's uid, written by nobody";
  EXPECT_EQ(t->hypervisor.kernel, config.hypervisor.kernel) << "the template records the real kernel";
  EXPECT_EQ(CloneConfig(*t, config).hypervisor.kernel, t->boot_stub_path());
  auto clone = CloneFromTemplate(*t, config, nullptr, nullptr, env.Deps());
  ASSERT_TRUE(clone.ok()) << clone.status().ToString();
  (*clone)->Stop();

  ASSERT_EQ(::chmod(t->boot_stub_path().c_str(), 0666), 0);
  auto tampered = LoadTemplate(root);
  EXPECT_EQ(tampered.status().code(), Code::kPermissionDenied) << tampered.status().ToString();
  EXPECT_THAT(tampered.status().message(), HasSubstr("boot-stub"));
}

TEST_F(TemplateFactoryTest, AKernelThatIsNoBzImageGetsNoStub) {
  EXPECT_EQ(info_.boot_stub_bytes, 0u);
  EXPECT_EQ(CloneConfig(info_, env_.Config()).hypervisor.kernel, env_.Config().hypervisor.kernel);
}

// Restore targets: clones started ahead and waiting for their state.
class RestoreTargetTest : public TemplateFactoryTest {
 protected:
  std::unique_ptr<Factory> MakeFactory(int target) {
    RestoreTargetOptions o;
    o.target = target;
    o.min_backoff = std::chrono::milliseconds(20);
    o.monitor_interval = std::chrono::milliseconds(50);
    auto f = NewTemplateFactory(env_.Config(), root_, env_.Deps(), o);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? std::move(*f) : nullptr;
  }
  static bool WaitWaiting(const Factory& f, size_t n) {
    return WaitUntil([&] { return f.State().restore->waiting.size() >= n; }, std::chrono::seconds(20));
  }
};

TEST_F(RestoreTargetTest, AClonesTakesAWaitingTargetAndAnotherIsStarted) {
  auto f = MakeFactory(2);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 2));
  const FactoryState before = f->State();
  ASSERT_TRUE(before.restore.has_value());
  EXPECT_EQ(before.restore->target, 2);
  for (const WaitingTarget& w : before.restore->waiting) {
    EXPECT_EQ(w.generation, info_.generation);
    EXPECT_GT(w.pss_bytes, 0u) << "the PSS of its processes is measured";
  }
  const int created = env_.backend().created();

  StepTimes steps;
  auto got = f->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->source, VmSource::kTemplate);
  EXPECT_TRUE(HasStep(steps, "restore target taken"));
  EXPECT_TRUE(HasStep(steps, "restore + resume"));
  EXPECT_FALSE(HasStep(steps, "qemu start")) << "the target's VM process was started ahead";
  EXPECT_EQ(got->vm->id(), before.restore->waiting[0].vm.id);
  EXPECT_TRUE(got->vm->Healthy());

  // The worker starts a replacement.
  ASSERT_TRUE(WaitWaiting(*f, 2));
  EXPECT_EQ(env_.backend().created(), created + 1);
  EXPECT_EQ(f->State().restore->taken, 1u);

  // Bigger than the template: a target plus hotplug.
  VMConfig big = env_.Config();
  big.hypervisor.memory_mib = 512;
  steps.clear();
  auto grown = f->GetVM(big, &steps);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_TRUE(HasStep(steps, "restore target taken"));
  EXPECT_EQ(grown->vm->memory_mib(), 512u);
}

TEST_F(RestoreTargetTest, WithNoneWaitingAClonesStartsItsOwn) {
  auto f = MakeFactory(1);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 1));
  StepTimes steps;
  auto first = f->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  // Taken at once again, before the worker made the next: a clone of its own.
  steps.clear();
  auto second = f->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->source, VmSource::kTemplate);
  EXPECT_TRUE(HasStep(steps, "restore target taken") || HasStep(steps, "qemu start"));
}

TEST_F(RestoreTargetTest, ATargetThatFailsToRestoreFallsBackToAFreshClone) {
  auto f = MakeFactory(1);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 1));
  const std::string target_id = f->State().restore->waiting[0].vm.id;
  env_.backend().FailRestores(1, DataLoss("restore of the VM state failed"));
  StepTimes steps;
  auto got = f->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_NE(got->vm->id(), target_id);
  EXPECT_TRUE(HasStep(steps, "qemu start"));
  EXPECT_FALSE(std::filesystem::exists(env_.runtime() + "/vm/" + target_id)) << "the failed target is gone";
}

TEST_F(RestoreTargetTest, DeadAndStaleTargetsAreReplaced) {
  auto f = MakeFactory(1);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 1));
  const pid_t victim = f->State().restore->waiting[0].vm.vmm_pid;
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = f->State().restore;
        return s->replaced >= 1 && s->waiting.size() == 1 && s->waiting[0].vm.vmm_pid != victim;
      },
      std::chrono::seconds(20)));

  // A new template generation: the waiting target is for the old one.
  TemplateOptions o;
  o.mount_tmpfs = false;
  o.force = true;
  o.deps = env_.Deps();
  auto fresh = CreateTemplate(env_.Config(), root_, o);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  ASSERT_NE(fresh->generation, info_.generation);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = f->State().restore;
        return s->waiting.size() == 1 && s->waiting[0].generation == fresh->generation;
      },
      std::chrono::seconds(20)));
  StepTimes steps;
  auto got = f->GetVM(env_.Config(), &steps);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(HasStep(steps, "restore target taken"));
}

TEST_F(RestoreTargetTest, CloseStopsEveryTarget) {
  auto f = MakeFactory(2);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 2));
  EXPECT_EQ(env_.VmDirs(), 2);
  f->Close();
  EXPECT_EQ(env_.Processes(), 0);
  EXPECT_EQ(env_.VmDirs(), 0);
  f.reset();
}

TEST_F(RestoreTargetTest, ABrokenTemplateStopsItsTargetsAndSaysWhy) {
  auto f = MakeFactory(1);
  ASSERT_TRUE(f);
  ASSERT_TRUE(WaitWaiting(*f, 1));
  std::filesystem::remove(info_.state_path());
  ASSERT_TRUE(WaitUntil([&] { return f->State().restore->failures >= 1; }));
  EXPECT_THAT(f->State().restore->last_error, HasSubstr(info_.state_path()));
  EXPECT_TRUE(f->State().restore->waiting.empty());
  EXPECT_EQ(f->State().restore->replaced, 1u);
  EXPECT_EQ(env_.VmDirs(), 0);
  EXPECT_EQ(f->GetVM(env_.Config()).status().code(), Code::kDataLoss);
}

TEST(TemplateMismatchTest, SaysWhatDiffers) {
  HypervisorConfig base;
  base.kernel = "/k";
  base.initrd = "/i";
  HypervisorConfig req = base;
  EXPECT_TRUE(HypervisorMismatch(base, req, "the pool").ok());
  req.memory_mib = 4096;
  Status st = HypervisorMismatch(base, req, "the pool");
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("hotplug ceiling"));
  req = base;
  req.qemu.machine = "pc";
  EXPECT_THAT(HypervisorMismatch(base, req, "the pool").message(), HasSubstr("machine pc"));
  req = base;
  req.vcpus = 0;
  EXPECT_THAT(HypervisorMismatch(base, req, "the pool").message(), HasSubstr("fewer than"));
}

class PoolTest : public ::testing::Test {
 protected:
  std::unique_ptr<VMCache> MakePool(int target, Duration min_backoff = std::chrono::milliseconds(20)) {
    CacheOptions o;
    o.target = target;
    o.min_backoff = min_backoff;
    o.max_backoff = std::max<Duration>(min_backoff, std::chrono::milliseconds(100));
    o.monitor_interval = std::chrono::milliseconds(20);
    return std::make_unique<VMCache>(NewDirectFactory(env_.Config(), env_.Deps()), o, &observer_);
  }
  bool WaitReady(VMCache& pool, int n) {
    return WaitUntil([&] { return static_cast<int>(pool.Pool().ready.size()) >= n; },
                     std::chrono::seconds(30));
  }
  FakeVmEnv env_;
  RecordingObserver observer_;
};

TEST_F(PoolTest, HitsWhileReadyThenMissesToTheBase) {
  auto pool = MakePool(2);
  ASSERT_TRUE(WaitReady(*pool, 2));
  // The observer hears of a size just after the pool has it.
  EXPECT_TRUE(WaitUntil([&] { return observer_.last_size == 2; })) << observer_.last_size;
  EXPECT_GE(observer_.made, 2);
  EXPECT_EQ(observer_.last_source, VmSource::kColdBoot);

  auto hit = pool->GetVM(env_.Config());
  ASSERT_TRUE(hit.ok()) << hit.status().ToString();
  EXPECT_EQ(hit->source, VmSource::kPool);
  EXPECT_TRUE(hit->vm->Healthy());

  // A request the pool cannot serve goes to the base at once.
  VMConfig other = env_.Config();
  other.hypervisor.kernel_params = "vmf.other=1";
  auto miss = pool->GetVM(other);
  ASSERT_TRUE(miss.ok());
  EXPECT_EQ(miss->source, VmSource::kColdBoot);

  // A bigger one fits (hotplug): a hit, grown.
  VMConfig big = env_.Config();
  big.hypervisor.vcpus = 2;
  ASSERT_TRUE(WaitReady(*pool, 1));
  auto grown = pool->GetVM(big);
  ASSERT_TRUE(grown.ok()) << grown.status().ToString();
  EXPECT_EQ(grown->source, VmSource::kPool);
  EXPECT_EQ(grown->vm->cpus(), 2u);

  FactoryState s = pool->State();
  ASSERT_TRUE(s.pool.has_value());
  EXPECT_EQ(s.pool->target, 2);
  EXPECT_EQ(s.base, VmSource::kColdBoot);
}

TEST_F(PoolTest, EmptyPoolServesFromTheBase) {
  env_.backend().FailStarts(1000, Unavailable("not now"));  // the refills cannot fill it
  auto pool = MakePool(1, std::chrono::seconds(5));
  ASSERT_TRUE(WaitUntil([&] { return observer_.failed >= 1; }));
  env_.backend().FailStarts(0, OkStatus());
  auto got = pool->GetVM(env_.Config());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->source, VmSource::kColdBoot);
}

TEST_F(PoolTest, AFailingBaseIsRetriedWithBackoffAndRecovers) {
  env_.backend().FailStarts(3, Unavailable("boom"));
  auto pool = MakePool(1);
  ASSERT_TRUE(WaitReady(*pool, 1));
  PoolState s = pool->Pool();
  EXPECT_EQ(s.failures, 3u);
  EXPECT_THAT(s.last_error, HasSubstr("boom"));
  EXPECT_EQ(observer_.failed, 3);
  EXPECT_EQ(s.retry_in.count(), 0) << "no backoff once it works again";
}

TEST_F(PoolTest, BackoffGrowsAndIsShown) {
  env_.backend().FailStarts(1000, Unavailable("still broken"));
  auto pool = MakePool(1, std::chrono::milliseconds(200));
  // Read while it waits (between tries retry_in is 0).
  PoolState s;
  ASSERT_TRUE(WaitUntil([&] {
    s = pool->Pool();
    return s.failures >= 1 && s.retry_in.count() > 0;
  }));
  EXPECT_LE(s.retry_in.count(), 200);
  // 200 ms between tries: about 3 tries in 500 ms, never a spin.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LE(pool->Pool().failures, 8u);
}

TEST_F(PoolTest, AMissRetriesOnceWhenTheVmDiedWhileMade) {
  auto pool = MakePool(0);
  env_.backend().FailStarts(1, Unavailable("QEMU exited during start-up"));
  auto got = pool->GetVM(env_.Config());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  // A bad request is not retried.
  env_.backend().FailStarts(1, InvalidArgument("bad"));
  auto bad = pool->GetVM(env_.Config());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
}

TEST_F(PoolTest, APooledVmThatDiesIsReplaced) {
  auto pool = MakePool(2);
  ASSERT_TRUE(WaitReady(*pool, 2));
  pid_t victim = pool->Pool().ready[0].vmm_pid;
  ASSERT_GT(victim, 0);
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return pool->Pool().replaced >= 1; }, std::chrono::seconds(30)))
      << "replaced " << pool->Pool().replaced << ", last error: " << pool->Pool().last_error;
  EXPECT_GE(observer_.replaced, 1);
  ASSERT_TRUE(WaitReady(*pool, 2)) << pool->Pool().ready.size()
                                   << " ready, last error: " << pool->Pool().last_error;
  for (const auto& h : pool->Pool().ready) EXPECT_NE(h.vmm_pid, victim);
}

TEST_F(PoolTest, CloseStopsEverything) {
  auto pool = MakePool(2);
  ASSERT_TRUE(WaitReady(*pool, 2));
  pool->Close();
  EXPECT_EQ(env_.Processes(), 0);
  EXPECT_EQ(env_.VmDirs(), 0);
  pool.reset();
}

}  // namespace
}  // namespace vmf::testing
