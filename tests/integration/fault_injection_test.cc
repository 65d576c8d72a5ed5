// SIGKILL of QEMU, and separately of the proxy, at each stage of a VM's life
// in this process: cold boot, template save, clone restore, hotplug, and a
// running command. Each time the caller gets a clear error (or, where the
// killed process plays no part, a good result), and the host is back where it
// was: the census of QEMU processes, proxies, sockets, VM dirs, mounts and
// our own open fds is the same before and after.
// (While pooled, while handed out, and the daemon itself: daemon_test.cc.)
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <ostream>
#include <thread>

#include "common/census.h"
#include "common/failpoint.h"
#include "factory/factory.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string stage;
  std::string victim;  // "qemu" or "proxy"
};

// For gtest's test listing (otherwise it prints the struct's bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << c.victim << " killed at " << c.stage; }

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string s = info.param.stage + "_" + info.param.victim;
  for (char& c : s) {
    if (c == '.') c = '_';
  }
  return s;
}

class FaultInjectionTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    (void)SharedTemplate();  // made (or found) before counting
    before_ = Census();
  }
  void TearDown() override {
    failpoint::SetHook(nullptr);
    // Give QEMU a moment to be reaped by whoever owns it.
    HostCensus after;
    for (int i = 0; i < 50; ++i) {
      after = Census();
      if (after == before_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(after.ToString(), before_.ToString()) << "the host is not back where it was";
  }
  static HostCensus Census() { return TakeCensus(TestRuntimeDir(), ::getpid()); }

  // Arms `point`: the first time it is hit, the victim gets SIGKILL.
  void KillAt(std::string_view point) {
    const bool qemu = GetParam().victim == "qemu";
    failpoint::SetHook(
        [this, point = std::string(point), qemu](std::string_view at, const failpoint::Target& t) {
          if (at != point || fired_.exchange(true)) return;
          pid_t pid = qemu ? t.vmm_pid : t.proxy_pid;
          ASSERT_GT(pid, 0) << "no " << (qemu ? "QEMU" : "proxy") << " at " << at;
          ::kill(pid, SIGKILL);
        });
  }
  void ExpectClearError(const Status& st) {
    EXPECT_TRUE(fired_) << "the fail point was never reached";
    ASSERT_FALSE(st.ok()) << "killing the " << GetParam().victim << " at " << GetParam().stage
                          << " went unnoticed";
    EXPECT_NE(st.code(), Code::kUnknown) << st.ToString();
    EXPECT_NE(st.code(), Code::kInternal) << st.ToString();
    const char* who = GetParam().victim == "qemu" ? "QEMU" : "proxy";
    EXPECT_NE(st.message().find(who), std::string::npos)
        << "the error should say that the " << who << " died: " << st.ToString();
    std::cerr << "[ error    ] " << st.ToString().substr(0, 300) << "\n";
  }

  HostCensus before_;
  std::atomic<bool> fired_{false};
};

TEST_P(FaultInjectionTest, CallerGetsAClearErrorAndNothingIsLeft) {
  const std::string& stage = GetParam().stage;
  const bool qemu = GetParam().victim == "qemu";
  auto started = Clock::now();
  if (stage == "boot") {
    KillAt(failpoint::kVmBoot);
    auto vm = VM::Create(TestConfig());
    ExpectClearError(vm.status());
  } else if (stage == "restore") {
    KillAt(failpoint::kVmRestore);
    auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
    ExpectClearError(vm.status());
  } else if (stage == "hotplug") {
    auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    KillAt(failpoint::kVmHotplug);
    auto grew = (*vm)->GrowTo((*vm)->cpus() + 1, (*vm)->memory_mib() + 128);
    ExpectClearError(grew.status());
    (*vm)->Stop();
  } else if (stage == "exec") {
    auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    auto cmd = std::async(std::launch::async, [&] { return Exec(**vm, {"sleep", "60"}); });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    pid_t pid = qemu ? (*vm)->vmm_pid() : (*vm)->proxy_pid();
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    fired_ = true;
    auto r = cmd.get();
    ExpectClearError(r.status());
    (*vm)->Stop();
  } else if (stage == "template.save") {
    const std::string root = TestRuntimeDir() + "-tpl-" + GetParam().victim;
    KillAt(failpoint::kTemplateSave);
    TemplateOptions o;
    o.mount_tmpfs = false;
    auto t = CreateTemplate(TestConfig(), root, o);
    if (qemu) {
      ExpectClearError(t.status());
      EXPECT_FALSE(LoadTemplate(root).ok()) << "no half-made template is published";
      std::error_code ec;
      int left = 0;
      for (const auto& e : fs::directory_iterator(root, ec)) {
        ADD_FAILURE() << "left in the template root: " << e.path();
        ++left;
      }
      EXPECT_EQ(left, 0);
    } else {
      // The proxy is stopped before the save anyway: the template is good.
      EXPECT_TRUE(fired_);
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      EXPECT_TRUE(LoadTemplate(root).ok());
    }
    std::error_code ec;
    fs::remove_all(root, ec);
  } else {
    FAIL() << "unknown stage " << stage;
  }
  // The error comes from noticing the death, not from a long timeout.
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(60));
}

INSTANTIATE_TEST_SUITE_P(Stages, FaultInjectionTest,
                         ::testing::Values(Case{"boot", "qemu"}, Case{"boot", "proxy"},
                                           Case{"restore", "qemu"}, Case{"restore", "proxy"},
                                           Case{"hotplug", "qemu"}, Case{"hotplug", "proxy"},
                                           Case{"exec", "qemu"}, Case{"exec", "proxy"},
                                           Case{"template.save", "qemu"}, Case{"template.save", "proxy"}),
                         CaseName);

}  // namespace
}  // namespace vmf::testing
