// A Kubernetes pod through containerd's CRI plugin, as kubelet makes one,
// with a small CRI client (support/cri_client.h): RunPodSandbox with the
// runtime handler "vmfactory" (io.containerd.vmfactory.v2, our shim) in the
// node's network (no CNI needed), two containers in it, ExecSync in each:
// all of the pod in one VM (one boot id, the guest's kernel). Then
// StopPodSandbox and RemovePodSandbox leave nothing behind. A runc pod for
// contrast: its containers share the host's kernel.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/io.h"
#include "common/procfs.h"
#include "helpers.h"
#include "support/containerd_env.h"
#include "support/cri_client.h"
#include "support/oci_image.h"

namespace vmf::testing {
namespace {

using namespace std::chrono_literals;
namespace rt = runtime::v1;
using test::CriClient;
using test::PrivateContainerd;

constexpr char kHandler[] = "vmfactory";  // config.toml's runtime for io.containerd.vmfactory.v2

std::string PodRuntimeDir() { return TestRuntimeDir() + "-pod"; }

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

class PodTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    if (FindProgram("containerd").empty() || FindProgram("ctr").empty() || FindProgram("mkfs.ext4").empty())
      return;
    // The shim's config: the test's guest image and template, a runtime dir
    // of its own (to count what is left), no daemon.
    const std::string config_path = WriteShimConfig(PodRuntimeDir());
    ::setenv("VMF_CONFIG", config_path.c_str(), 1);  // containerd passes it to its shims
    auto ctrd = PrivateContainerd::Start(VMF_DEFAULT_BIN_DIR, 60s);
    if (!ctrd.ok()) {
      start_error_ = new std::string(ctrd.status().ToString());
      return;
    }
    ctrd_ = ctrd->release();
    Status st = Prepare();
    if (!st.ok()) start_error_ = new std::string(st.ToString() + "\ncontainerd's log:\n" + ctrd_->log());
  }
  // The images in the CRI plugin's namespace (the test image, and the
  // sandbox image: busybox sleeping), and a client that sees them.
  static Status Prepare() {
    const std::string image_tar = ctrd_->dir() + "/image.tar";
    const std::string pause_tar = ctrd_->dir() + "/pause.tar";
    VMF_RETURN_IF_ERROR(test::BuildBusyboxImage(image_tar, test::kTestImageRef));
    VMF_RETURN_IF_ERROR(
        test::BuildBusyboxImage(pause_tar, PrivateContainerd::kSandboxImageRef, {"sleep", "1000000"}));
    VMF_RETURN_IF_ERROR(ctrd_->ImportImage(image_tar, PrivateContainerd::kCriNamespace));
    VMF_RETURN_IF_ERROR(ctrd_->ImportImage(pause_tar, PrivateContainerd::kCriNamespace));
    VMF_ASSIGN_OR_RETURN(auto cri, CriClient::Connect(ctrd_->address(), 10s));
    cri_ = cri.release();
    VMF_ASSIGN_OR_RETURN(rt::VersionResponse v, cri_->Version(10s));
    std::cout << "CRI: " << v.runtime_name() << " " << v.runtime_version() << ", API "
              << v.runtime_api_version() << "\n";
    // The CRI plugin learns of imported images from containerd's events.
    for (const char* ref : {test::kTestImageRef, PrivateContainerd::kSandboxImageRef}) {
      Status seen;
      for (int i = 0; i < 100; ++i) {
        seen = cri_->ImageStatus(ref, 10s).status();
        if (seen.ok()) break;
        std::this_thread::sleep_for(100ms);
      }
      VMF_RETURN_IF_ERROR(seen.WithContext("the CRI plugin does not see the imported image"));
    }
    return OkStatus();
  }
  static void TearDownTestSuite() {
    delete cri_;
    cri_ = nullptr;
    delete ctrd_;
    ctrd_ = nullptr;
    ::unsetenv("VMF_CONFIG");
    std::error_code ec;
    std::filesystem::remove_all(PodRuntimeDir(), ec);
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (start_error_) FAIL() << *start_error_;
    if (!ctrd_) GTEST_SKIP() << "containerd, ctr or mkfs.ext4 is not installed";
  }
  // Whatever a failed test left: every pod stopped and removed.
  void TearDown() override {
    if (!cri_) return;
    auto pods = cri_->ListPodSandbox(10s);
    if (!pods.ok()) return;
    for (const auto& p : *pods) {
      (void)cri_->StopPodSandbox(p.id(), 120s);
      (void)cri_->RemovePodSandbox(p.id(), 120s);
    }
  }

  // Stops and removes the pod, checking each step; the pod and its
  // containers are gone from the CRI's lists after.
  void StopAndRemovePod(const std::string& pod_id, const std::vector<std::string>& containers) {
    auto t0 = std::chrono::steady_clock::now();
    Status st = cri_->StopPodSandbox(pod_id, 120s);
    std::cout << "StopPodSandbox: " << MsSince(t0) << " ms\n";
    EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << ctrd_->log();
    for (const auto& id : containers) {
      auto s = cri_->ContainerStatus(id, 10s);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      EXPECT_EQ(test::ContainerStateName(s->state()), "CONTAINER_EXITED") << id;
    }
    auto ps = cri_->PodSandboxStatus(pod_id, 10s);
    ASSERT_TRUE(ps.ok()) << ps.status().ToString();
    EXPECT_EQ(ps->status().state(), rt::SANDBOX_NOTREADY);
    t0 = std::chrono::steady_clock::now();
    st = cri_->RemovePodSandbox(pod_id, 120s);
    std::cout << "RemovePodSandbox: " << MsSince(t0) << " ms\n";
    EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << ctrd_->log();
    auto pods = cri_->ListPodSandbox(10s);
    ASSERT_TRUE(pods.ok()) << pods.status().ToString();
    EXPECT_TRUE(pods->empty()) << pods->size() << " pods left";
    auto left = cri_->ListContainers("", 10s);
    ASSERT_TRUE(left.ok()) << left.status().ToString();
    EXPECT_TRUE(left->empty()) << left->size() << " containers left";
  }

  // Our shims: those of this containerd (a shim carries its address), not
  // those of whatever else runs on the machine.
  static size_t CountOurShims() {
    size_t n = 0;
    for (pid_t pid : test::ProcessesNamed("containerd-shim-vmfactory-v2")) {
      for (const std::string& arg : ProcessArgv(pid)) {
        if (arg.find(ctrd_->dir()) != std::string::npos) {
          ++n;
          break;
        }
      }
    }
    return n;
  }
  // Nothing of a pod is left (polled for up to 10 s): no shim, no VM
  // process, no VM dir, and no process but containerd itself that names
  // containerd's dir.
  void ExpectNothingLeft() {
    auto clean = [&] {
      return CountOurShims() == 0 && CountProcessesMentioning(PodRuntimeDir() + "/vm/") == 0 &&
             CountProcessesMentioning(ctrd_->dir()) == 1;
    };
    for (int i = 0; i < 100 && !clean(); ++i) std::this_thread::sleep_for(100ms);
    EXPECT_EQ(CountOurShims(), 0u);
    EXPECT_EQ(CountProcessesMentioning(PodRuntimeDir() + "/vm/"), 0);
    EXPECT_EQ(CountProcessesMentioning(ctrd_->dir()), 1) << "containerd and nothing else";
    EXPECT_EQ(CountVmDirs(), 0);
  }
  static int CountVmDirs() { return CountVmDirsIn(PodRuntimeDir()); }

  // Creates and starts a container of the test image running cmd in the pod.
  std::string StartContainer(const std::string& pod_id, const rt::PodSandboxConfig& pod,
                             const std::string& name, const std::vector<std::string>& cmd) {
    auto t0 = std::chrono::steady_clock::now();
    auto id = cri_->CreateContainer(pod_id, CriClient::Container(name, test::kTestImageRef, cmd), pod, 180s);
    std::cout << "CreateContainer " << name << ": " << MsSince(t0) << " ms\n";
    EXPECT_TRUE(id.ok()) << id.status().ToString() << "\n" << ctrd_->log();
    if (!id.ok()) return "";
    t0 = std::chrono::steady_clock::now();
    Status st = cri_->StartContainer(*id, 120s);
    std::cout << "StartContainer " << name << ": " << MsSince(t0) << " ms\n";
    EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << ctrd_->log();
    return *id;
  }
  test::ExecSyncResult Exec(const std::string& id, const std::vector<std::string>& cmd) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = cri_->ExecSync(id, cmd, 60s);
    std::cout << "ExecSync " << cmd[0] << " in " << id.substr(0, 12) << ": " << MsSince(t0) << " ms\n";
    EXPECT_TRUE(r.ok()) << r.status().ToString() << "\n" << ctrd_->log();
    return r.ok() ? *r : test::ExecSyncResult{};
  }

  static PrivateContainerd* ctrd_;
  static CriClient* cri_;
  static std::string* start_error_;
};
PrivateContainerd* PodTest::ctrd_ = nullptr;
CriClient* PodTest::cri_ = nullptr;
std::string* PodTest::start_error_ = nullptr;

TEST_F(PodTest, APodIsOneVmAndStoppingItLeavesNothing) {
  auto host_boot_id = ReadFile("/proc/sys/kernel/random/boot_id");
  ASSERT_TRUE(host_boot_id.ok());
  auto guest_kernel = ReadFile(std::string(VMF_BUILD_DIR) + "/guest/kernel-version");
  ASSERT_TRUE(guest_kernel.ok());

  const rt::PodSandboxConfig pod = CriClient::HostNetworkPod("pod1", "uid-pod1", "default");
  auto t0 = std::chrono::steady_clock::now();
  auto pod_id = cri_->RunPodSandbox(pod, kHandler, 180s);
  std::cout << "RunPodSandbox: " << MsSince(t0) << " ms\n";
  ASSERT_TRUE(pod_id.ok()) << pod_id.status().ToString() << "\n" << ctrd_->log();
  auto ps = cri_->PodSandboxStatus(*pod_id, 10s);
  ASSERT_TRUE(ps.ok()) << ps.status().ToString();
  EXPECT_EQ(ps->status().state(), rt::SANDBOX_READY);
  EXPECT_EQ(ps->status().runtime_handler(), kHandler);

  const std::string c1 = StartContainer(*pod_id, pod, "c1", {"sleep", "1000000"});
  const std::string c2 = StartContainer(*pod_id, pod, "c2", {"sleep", "1000000"});
  ASSERT_FALSE(c1.empty());
  ASSERT_FALSE(c2.empty());
  for (const auto& id : {c1, c2}) {
    auto s = cri_->ContainerStatus(id, 10s);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ(test::ContainerStateName(s->state()), "CONTAINER_RUNNING")
        << id << ": " << s->reason() << " " << s->message();
  }
  auto listed = cri_->ListContainers(*pod_id, 10s);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->size(), 2u);

  // One VM: the same kernel boot in both containers, not the host's.
  auto b1 = Exec(c1, {"cat", "/proc/sys/kernel/random/boot_id"});
  auto b2 = Exec(c2, {"cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(b1.exit_code, 0) << b1.Describe();
  EXPECT_EQ(b2.exit_code, 0) << b2.Describe();
  EXPECT_EQ(Trimmed(b1.out).size(), 36u) << b1.Describe();
  EXPECT_EQ(b1.out, b2.out) << "two VMs? " << b1.Describe() << " / " << b2.Describe();
  EXPECT_NE(b1.out, *host_boot_id) << "on the host's kernel";
  // The kubelet's stats: CRI decodes the shim's cgroups Metrics (from the
  // container's cgroup in the guest).
  auto stats = cri_->ContainerStats(c1, 30s);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GT(stats->memory().working_set_bytes().value(), 0u) << stats->DebugString();
  EXPECT_GT(stats->cpu().usage_core_nano_seconds().value(), 0u) << stats->DebugString();
  // One pod: both containers in the sandbox's IPC and UTS namespaces (CRI
  // asks for them by the sandbox's /proc/PID/ns paths), each with its own root.
  auto n1 = Exec(c1, {"sh", "-c", "for n in ipc uts mnt; do readlink /proc/self/ns/$n; done"});
  auto n2 = Exec(c2, {"sh", "-c", "for n in ipc uts mnt; do readlink /proc/self/ns/$n; done"});
  ASSERT_EQ(n1.exit_code, 0) << n1.Describe();
  ASSERT_EQ(n2.exit_code, 0) << n2.Describe();
  std::istringstream l1(n1.out), l2(n2.out);
  std::string ipc1, uts1, mnt1, ipc2, uts2, mnt2;
  l1 >> ipc1 >> uts1 >> mnt1;
  l2 >> ipc2 >> uts2 >> mnt2;
  EXPECT_EQ(ipc1, ipc2) << n1.out << n2.out;
  EXPECT_EQ(uts1, uts2) << n1.out << n2.out;
  EXPECT_NE(mnt1, mnt2) << n1.out << n2.out;
  // One shim and one VM for the pod.
  EXPECT_EQ(CountOurShims(), 1u);
  EXPECT_EQ(CountVmDirs(), 1);

  for (const auto& id : {c1, c2}) {
    // CRI's bind mounts (hosts, resolv.conf, hostname) arrive as copies.
    auto f =
        Exec(id, {"sh", "-c", "test -f /etc/hosts && test -f /etc/resolv.conf && test -f /etc/hostname"});
    EXPECT_EQ(f.exit_code, 0) << f.Describe();
    auto m = Exec(id, {"cat", "/etc/vmf-image-marker"});
    EXPECT_EQ(m.exit_code, 0) << m.Describe();
    EXPECT_EQ(m.out, test::kImageMarkerContents) << m.Describe();
    auto u = Exec(id, {"uname", "-r"});
    EXPECT_EQ(u.exit_code, 0) << u.Describe();
    EXPECT_EQ(Trimmed(u.out), Trimmed(*guest_kernel)) << u.Describe();
  }
  // The exit status and the two streams come back apart.
  auto e = Exec(c1, {"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(e.exit_code, 3) << e.Describe();
  EXPECT_EQ(e.out, "out\n") << e.Describe();
  EXPECT_EQ(e.err, "err\n") << e.Describe();

  StopAndRemovePod(*pod_id, {c1, c2});
  ExpectNothingLeft();
}

TEST_F(PodTest, AContainerStopsAndGoesWhileItsPodRuns) {
  const rt::PodSandboxConfig pod = CriClient::HostNetworkPod("pod2", "uid-pod2", "default");
  auto pod_id = cri_->RunPodSandbox(pod, kHandler, 180s);
  ASSERT_TRUE(pod_id.ok()) << pod_id.status().ToString() << "\n" << ctrd_->log();
  const std::string c1 = StartContainer(*pod_id, pod, "c1", {"sleep", "1000000"});
  const std::string c2 = StartContainer(*pod_id, pod, "c2", {"sleep", "1000000"});
  ASSERT_FALSE(c1.empty());
  ASSERT_FALSE(c2.empty());
  auto before = Exec(c2, {"cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(before.exit_code, 0) << before.Describe();

  // As kubelet does when a pod's container goes: stop (SIGKILL at once:
  // sleep as a container's PID 1 ignores SIGTERM), then remove.
  Status st = cri_->StopContainer(c1, 0, 60s);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << ctrd_->log();
  auto s = cri_->ContainerStatus(c1, 10s);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(test::ContainerStateName(s->state()), "CONTAINER_EXITED");
  EXPECT_EQ(s->exit_code(), 137);
  st = cri_->RemoveContainer(c1, 60s);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << ctrd_->log();
  EXPECT_FALSE(cri_->ContainerStatus(c1, 10s).ok());

  // The pod and its other container live on, in the same VM; a new
  // container joins it.
  auto after = Exec(c2, {"cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(after.exit_code, 0) << after.Describe();
  EXPECT_EQ(after.out, before.out);
  const std::string c3 = StartContainer(*pod_id, pod, "c3", {"sleep", "1000000"});
  ASSERT_FALSE(c3.empty());
  auto third = Exec(c3, {"cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(third.exit_code, 0) << third.Describe();
  EXPECT_EQ(third.out, before.out) << "not in the pod's VM";
  EXPECT_EQ(CountVmDirs(), 1);

  StopAndRemovePod(*pod_id, {c2, c3});
  ExpectNothingLeft();
}

// The same pod on runc, for contrast (and to tell a CRI problem from a
// shim problem): its containers run on the host's kernel.
TEST_F(PodTest, ARuncPodRunsOnTheHostKernel) {
  if (FindProgram("runc").empty()) GTEST_SKIP() << "runc is not installed";
  auto host_boot_id = ReadFile("/proc/sys/kernel/random/boot_id");
  ASSERT_TRUE(host_boot_id.ok());
  const rt::PodSandboxConfig pod = CriClient::HostNetworkPod("pod3", "uid-pod3", "default");
  auto t0 = std::chrono::steady_clock::now();
  auto pod_id = cri_->RunPodSandbox(pod, "runc", 120s);
  std::cout << "RunPodSandbox (runc): " << MsSince(t0) << " ms\n";
  ASSERT_TRUE(pod_id.ok()) << pod_id.status().ToString() << "\n" << ctrd_->log();
  const std::string c1 = StartContainer(*pod_id, pod, "c1", {"sleep", "1000000"});
  ASSERT_FALSE(c1.empty());
  auto b = Exec(c1, {"cat", "/proc/sys/kernel/random/boot_id"});
  EXPECT_EQ(b.exit_code, 0) << b.Describe();
  EXPECT_EQ(b.out, *host_boot_id);
  auto m = Exec(c1, {"cat", "/etc/vmf-image-marker"});
  EXPECT_EQ(m.out, test::kImageMarkerContents) << m.Describe();
  StopAndRemovePod(*pod_id, {c1});
  ExpectNothingLeft();
}

}  // namespace
}  // namespace vmf::testing
