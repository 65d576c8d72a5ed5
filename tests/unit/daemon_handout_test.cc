// The daemon's hand-out records against a fake hypervisor and an in-process
// agent: what a GetVM hands over and records, what Status shows, and how the
// record goes when the VM ends. The daemon runs on a thread of the test.
// No QEMU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/io.h"
#include "daemon/client.h"
#include "daemon/daemon.h"
#include "mocks/fake_vm_env.h"
#include "support/wait_until.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

class DaemonHandOutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    opts_.vm = env_.Config();
    opts_.socket_path = env_.runtime() + "/daemon.sock";
    opts_.cache_number = 1;
    opts_.use_template = false;
    opts_.owner_check_interval = std::chrono::milliseconds(20);
    opts_.deps = env_.Deps();
    daemon_ = std::jthread([this] { result_ = RunDaemon(opts_, &stop_); });
    ASSERT_TRUE(WaitUntil([&] { return DaemonClient::Connect(opts_.socket_path).ok(); }));
  }
  void TearDown() override {
    stop_.Cancel();
    daemon_.join();
    EXPECT_TRUE(result_.ok()) << result_.ToString();
    EXPECT_FALSE(fs::exists(opts_.socket_path)) << "the socket is removed on the way out";
  }
  vmfactory::v1::StatusResponse DaemonStatus() {
    auto c = DaemonClient::Connect(opts_.socket_path);
    if (!c.ok()) return {};
    auto s = (*c)->GetStatus();
    return s.ok() ? *s : vmfactory::v1::StatusResponse();
  }
  std::string Record(const std::string& id) const {
    return env_.runtime() + "/daemon/handed-" + id + ".json";
  }

  FakeVmEnv env_;
  DaemonOptions opts_;
  CancelToken stop_;
  vmf::Status result_;
  std::jthread daemon_;
};

TEST_F(DaemonHandOutTest, AHandedOutVmIsRecordedUntilItEnds) {
  ASSERT_TRUE(WaitUntil([&] { return DaemonStatus().ready_size() == 1; }));
  auto c = DaemonClient::Connect(opts_.socket_path);
  ASSERT_TRUE(c.ok());
  auto vm = (*c)->GetVM(0, 0, Deadline(std::chrono::seconds(10)));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->source(), "cache");
  EXPECT_EQ(vm->backend(), "fake");
  EXPECT_GT(vm->vmm_pid(), 0);
  EXPECT_THAT(vm->runtime_dir(), ::testing::StartsWith(env_.runtime() + "/daemon/pool/vm/"));

  // The record names the VM and its owner (us), and survives on disk.
  auto text = ReadFile(Record(vm->id()), 64 * 1024);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["owner_pid"].get<pid_t>(), ::getpid());
  auto h = VMHandle::FromJson(j["vm"], "record");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->id, vm->id());
  EXPECT_EQ(h->vmm_pid, vm->vmm_pid());
  EXPECT_EQ(h->proxy_pid, vm->proxy_pid());
  EXPECT_EQ(h->cgroup_dirs, std::vector<std::string>(vm->cgroup_dirs().begin(), vm->cgroup_dirs().end()));
  for (const auto& d : vm->cgroup_dirs()) EXPECT_TRUE(fs::is_directory(d)) << d;

  auto s = DaemonStatus();
  ASSERT_EQ(s.handed_out_size(), 1);
  EXPECT_EQ(s.handed_out(0).id(), vm->id());
  EXPECT_EQ(s.handed_out(0).owner_pid(), ::getpid());
  EXPECT_EQ(s.base_source(), "direct");

  // The VM ends (its VM process dies): the record and its dir go, and what
  // was left of it (the proxy) is stopped.
  ::kill(vm->vmm_pid(), SIGKILL);
  ASSERT_TRUE(WaitUntil([&] { return DaemonStatus().handed_out_size() == 0; }));
  ASSERT_TRUE(WaitUntil([&] { return !fs::exists(Record(vm->id())); }));
  EXPECT_FALSE(fs::exists(vm->runtime_dir()));
  EXPECT_FALSE(ProcessAlive(vm->proxy_pid()));
  // And its cgroup, if this host gave it one.
  for (const auto& d : vm->cgroup_dirs()) EXPECT_FALSE(fs::exists(d)) << d;
}

TEST_F(DaemonHandOutTest, AMissIsLabelledByItsSource) {
  auto c = DaemonClient::Connect(opts_.socket_path);
  ASSERT_TRUE(c.ok());
  // Bigger than the pool's ceiling: the pool cannot serve it.
  auto vm = (*c)->GetVM(1, 4096, Deadline(std::chrono::seconds(10)));
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  EXPECT_EQ(vm->source(), "direct");
  EXPECT_EQ(vm->memory_mib(), 4096u);
  // Ours now: stopped, with everything it has (its cgroup too).
  auto taken = VM::Attach(VMHandle::FromProto(*vm), opts_.vm, opts_.deps);
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  (*taken)->Stop();
  for (const auto& d : vm->cgroup_dirs()) EXPECT_FALSE(fs::exists(d)) << d;
}

}  // namespace
}  // namespace vmf::testing
