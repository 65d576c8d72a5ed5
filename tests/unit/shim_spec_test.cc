// The shim's reading of what containerd gives it: Go-style flags, and the
// OCI spec of a bundle as the guest gets it.
#include <gtest/gtest.h>

#include "container/oci_spec.h"
#include "shim/flags.h"

namespace vmf {
namespace {

TEST(ShimFlagsTest, ParsesContainerdsStartAndDeleteLines) {
  auto f = shim::ParseShimFlags({"-namespace", "default", "-address", "/run/containerd/containerd.sock",
                                 "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-debug", "start"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->ns, "default");
  EXPECT_EQ(f->address, "/run/containerd/containerd.sock");
  EXPECT_EQ(f->id, "c1");
  EXPECT_TRUE(f->debug);
  EXPECT_EQ(f->action, "start");
  auto d = shim::ParseShimFlags({"--namespace=k8s.io", "-id=p1", "-bundle", "/b", "delete"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ns, "k8s.io");
  EXPECT_EQ(d->bundle, "/b");
  EXPECT_EQ(d->action, "delete");
  auto serve = shim::ServeArgv("/bin/shim", *f);
  auto again = shim::ParseShimFlags(std::vector<std::string>(serve.begin() + 1, serve.end()));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->action, "");
  EXPECT_EQ(again->id, "c1");
}

TEST(ShimFlagsTest, RejectsWhatItDoesNotKnow) {
  EXPECT_EQ(shim::ParseShimFlags({"-nosuch", "x"}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(shim::ParseShimFlags({"-id"}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(shim::ParseShimFlags({"start", "delete"}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(shim::ParseShimFlags({"frobnicate"}).status().code(), Code::kInvalidArgument);
}

constexpr char kSpec[] = R"({
  "ociVersion": "1.0.2-dev",
  "process": {"terminal": false, "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
              "args": ["sh", "-c", "exit 7"], "env": ["PATH=/bin", "A=b"], "cwd": "/tmp",
              "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": true},
  "root": {"path": "rootfs"},
  "hostname": "box",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
             {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts", "options": ["rbind", "ro"]}],
  "hooks": {"prestart": [{"path": "/usr/bin/evil"}]},
  "annotations": {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1"},
  "linux": {"resources": {"memory": {"limit": 536870912}, "cpu": {"quota": 150000, "period": 100000},
                          "pids": {"limit": 64}},
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"},
                           {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]}
})";

TEST(OciSpecTest, TheGuestGetsWhatIsSafeToCarryOver) {
  auto b = container::ParseBundleSpec(kSpec);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const grpc::Spec& s = b->spec;
  EXPECT_EQ(s.process().args_size(), 3);
  EXPECT_EQ(s.process().user().uid(), 1000u);
  EXPECT_EQ(s.process().user().additionalgids(0), 10u);
  EXPECT_EQ(s.process().cwd(), "/tmp");
  EXPECT_EQ(s.process().rlimits(0).type(), "RLIMIT_NOFILE");
  EXPECT_TRUE(s.process().nonewprivileges());
  EXPECT_EQ(s.hostname(), "box");
  // The proc mount stays; the host bind mount is set apart (to be copied
  // in) and the hooks are dropped.
  ASSERT_EQ(s.mounts_size(), 1);
  EXPECT_EQ(s.mounts(0).type(), "proc");
  ASSERT_EQ(b->binds.size(), 1u);
  EXPECT_EQ(b->binds[0].source, "/var/lib/x/hosts");
  EXPECT_EQ(b->binds[0].destination, "/etc/hosts");
  EXPECT_EQ(b->binds[0].options, (std::vector<std::string>{"rbind", "ro"}));
  EXPECT_EQ(b->skipped.size(), 1u);
  // No network namespace, and no host namespace paths: a pod container's
  // shared IPC namespace is its sandbox container's in the VM.
  for (const auto& ns : s.linux().namespaces()) {
    EXPECT_NE(ns.type(), "network");
    EXPECT_EQ(ns.path(), ns.type() == "ipc" ? "container:pod1" : "") << ns.type();
  }
  EXPECT_EQ(s.linux().namespaces_size(), 3);
  EXPECT_EQ(s.linux().resources().pids().limit(), 64);
  // A pod container, with the VM size its limits ask for.
  EXPECT_EQ(b->kind, container::BundleSpec::Kind::kPodContainer);
  EXPECT_EQ(b->sandbox_id, "pod1");
  EXPECT_EQ(b->extra_memory_mib, 512u);
  EXPECT_EQ(b->extra_vcpus, 2u);
}

TEST(OciSpecTest, BadSpecsAreClearErrors) {
  EXPECT_EQ(container::ParseBundleSpec("{").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(container::ParseBundleSpec("[]").status().code(), Code::kInvalidArgument);
  auto no_args = container::ParseBundleSpec(R"({"process": {"args": []}})");
  EXPECT_EQ(no_args.status().code(), Code::kInvalidArgument);
  EXPECT_NE(no_args.status().message().find("args"), std::string::npos);
  auto bad_type = container::ParseBundleSpec(R"({"process": {"args": [1]}})");
  EXPECT_EQ(bad_type.status().code(), Code::kInvalidArgument);
  auto orphan = container::ParseBundleSpec(
      R"({"process": {"args": ["x"]}, "annotations": {"io.kubernetes.cri.container-type": "container"}})");
  EXPECT_EQ(orphan.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(container::ParseProcess(R"({"args": ["ls"], "cwd": "/"})")->args(0), "ls");
  EXPECT_EQ(container::ParseResources(R"({"memory": {"limit": 1}})")->memory().limit(), 1);
  EXPECT_FALSE(container::ParseProcess("nope").ok());
}

}  // namespace
}  // namespace vmf
