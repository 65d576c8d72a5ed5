// The OCI runtime spec of a bundle (config.json), read for the guest: what
// the agent's CreateContainer gets (Kata's Spec, proto/agent.proto), which
// pod the container belongs to (CRI's annotations), and how big its VM must
// be.
//
// What crosses into the guest is rewritten, as Kata does: hooks are dropped
// (they would run on the host), namespace paths are cleared (they name host
// processes; the agent makes the container's own) except that a pod
// container's IPC, UTS and PID paths become its sandbox container's in the
// VM, the network, cgroup and time namespaces are dropped (the VM is the
// boundary), and bind mounts of host paths are taken out of the mounts into
// `binds` (their files are not in the VM: GuestContainer copies them in).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/status.h"

namespace vmf::container {

// CRI's annotation keys (containerd 1.6 pkg/cri/annotations).
inline constexpr char kContainerTypeAnnotation[] = "io.kubernetes.cri.container-type";
inline constexpr char kSandboxIdAnnotation[] = "io.kubernetes.cri.sandbox-id";
// How the guest is told that a pod container shares a namespace with its
// sandbox: Linux.Namespaces[].Path = "container:" + the sandbox's id (the
// agent's convention: agent/container.h).
inline constexpr char kShareNamespacePrefix[] = "container:";

// A bind mount of a host path: carried into the VM as a copy (a second
// disk of the container, guest_container.h); what the container writes
// there stays in the copy.
struct HostBind {
  std::string source;       // host path (file or directory)
  std::string destination;  // in the container
  std::vector<std::string> options;
};

struct BundleSpec {
  grpc::Spec spec;              // Root.Path still the host's; the caller sets the guest's
  std::vector<HostBind> binds;  // not in spec.Mounts
  enum class Kind { kSingle, kSandbox, kPodContainer } kind = Kind::kSingle;
  std::string sandbox_id;            // kPodContainer: the pod it joins
  uint32_t extra_vcpus = 0;          // CPU limit (quota/period), rounded up
  uint32_t extra_memory_mib = 0;     // memory limit, rounded up
  std::vector<std::string> skipped;  // what was left out, for the log
};

// Parses config.json text (at most 4 MiB): INVALID_ARGUMENT naming the bad
// field.
Result<BundleSpec> ParseBundleSpec(const std::string& json_text);
// Reads BUNDLE/config.json.
Result<BundleSpec> LoadBundleSpec(const std::string& bundle);

// An OCI "process" object (ExecProcessRequest.spec, JSON) as the agent's
// Process.
Result<grpc::Process> ParseProcess(const std::string& json_text);
// An OCI "LinuxResources" object (UpdateTaskRequest.resources, JSON).
Result<grpc::LinuxResources> ParseResources(const std::string& json_text);

}  // namespace vmf::container
