// CriClient: a small client of the Kubernetes CRI v1 API (runtime.v1
// RuntimeService and ImageService, tests/proto/cri_api.proto) over gRPC on
// a unix socket, for driving containerd's CRI plugin in tests as kubelet or
// crictl would (crictl is not packaged in Debian).
//
//   VMF_ASSIGN_OR_RETURN(auto cri, CriClient::Connect(ctrd->address(), 10s));
//   runtime::v1::PodSandboxConfig pod = CriClient::HostNetworkPod("pod1", "uid-1", "default");
//   VMF_ASSIGN_OR_RETURN(std::string pod_id, cri->RunPodSandbox(pod, "vmfactory", 180s));
//   VMF_ASSIGN_OR_RETURN(std::string id, cri->CreateContainer(
//       pod_id, CriClient::Container("c1", kTestImageRef, {"sleep", "1000000"}), pod, 120s));
//   VMF_RETURN_IF_ERROR(cri->StartContainer(id, 60s));
//   VMF_ASSIGN_OR_RETURN(ExecSyncResult r, cri->ExecSync(id, {"uname", "-r"}, 30s));
//
// Every call has a deadline (the `timeout` argument); a failed call is the
// project's Status with gRPC's code (the codes are the same) and a message
// "RuntimeService.METHOD: what the server said".
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "cri_api.grpc.pb.h"
#include "cri_api.pb.h"

namespace vmf::test {

struct ExecSyncResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  // "exit N, stdout: ..., stderr: ..." for assertion messages.
  std::string Describe() const;
};

class CriClient {
 public:
  // A channel to the gRPC server on the unix socket `socket_path` (e.g.
  // PrivateContainerd::address()), connected within timeout (UNAVAILABLE
  // otherwise).
  static Result<std::unique_ptr<CriClient>> Connect(const std::string& socket_path,
                                                    std::chrono::milliseconds timeout);

  // --- building requests ---
  // A pod in the node's network namespace (no CNI needed), its own PID and
  // IPC namespaces (POD), metadata name/uid/namespace; no hostname (as
  // kubelet for a hostNetwork pod: the node's UTS namespace, the node's name).
  static runtime::v1::PodSandboxConfig HostNetworkPod(const std::string& name, const std::string& uid,
                                                      const std::string& ns);
  // A container of `image` (a reference the CRI plugin knows) running
  // command (args empty: the image's Cmd stays as it is for args), with the
  // node's network as its pod has (what kubelet passes for a hostNetwork pod).
  static runtime::v1::ContainerConfig Container(const std::string& name, const std::string& image,
                                                const std::vector<std::string>& command,
                                                const std::vector<std::string>& args = {});

  // --- RuntimeService ---
  Result<runtime::v1::VersionResponse> Version(std::chrono::milliseconds timeout);
  // The pod sandbox id.
  Result<std::string> RunPodSandbox(const runtime::v1::PodSandboxConfig& config,
                                    const std::string& runtime_handler, std::chrono::milliseconds timeout);
  Status StopPodSandbox(const std::string& pod_id, std::chrono::milliseconds timeout);
  Status RemovePodSandbox(const std::string& pod_id, std::chrono::milliseconds timeout);
  Result<runtime::v1::PodSandboxStatusResponse> PodSandboxStatus(const std::string& pod_id,
                                                                 std::chrono::milliseconds timeout);
  Result<std::vector<runtime::v1::PodSandbox>> ListPodSandbox(std::chrono::milliseconds timeout);
  // The container id.
  Result<std::string> CreateContainer(const std::string& pod_id, const runtime::v1::ContainerConfig& config,
                                      const runtime::v1::PodSandboxConfig& sandbox_config,
                                      std::chrono::milliseconds timeout);
  Status StartContainer(const std::string& id, std::chrono::milliseconds timeout);
  // grace_seconds: SIGTERM, then SIGKILL after that long (0: SIGKILL at once).
  Status StopContainer(const std::string& id, int64_t grace_seconds, std::chrono::milliseconds timeout);
  Status RemoveContainer(const std::string& id, std::chrono::milliseconds timeout);
  Result<runtime::v1::ContainerStatus> ContainerStatus(const std::string& id,
                                                       std::chrono::milliseconds timeout);
  // pod_id empty: every pod's.
  Result<runtime::v1::ContainerStats> ContainerStats(const std::string& id,
                                                     std::chrono::milliseconds timeout);
  Result<std::vector<runtime::v1::Container>> ListContainers(const std::string& pod_id,
                                                             std::chrono::milliseconds timeout);
  // Runs cmd in the container and collects its output; the command gets
  // `timeout` (whole seconds, at least 1) and the call a little longer.
  Result<ExecSyncResult> ExecSync(const std::string& id, const std::vector<std::string>& cmd,
                                  std::chrono::seconds timeout);

  // --- ImageService ---
  // The image the CRI plugin knows by `ref`; NOT_FOUND if none.
  Result<runtime::v1::Image> ImageStatus(const std::string& ref, std::chrono::milliseconds timeout);
  Result<std::vector<runtime::v1::Image>> ListImages(std::chrono::milliseconds timeout);

 private:
  CriClient() = default;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<runtime::v1::RuntimeService::Stub> runtime_;
  std::unique_ptr<runtime::v1::ImageService::Stub> images_;
};

// The name of a CRI container state ("CONTAINER_RUNNING", ...).
std::string ContainerStateName(runtime::v1::ContainerState state);

}  // namespace vmf::test
