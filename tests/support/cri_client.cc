#include "support/cri_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>

namespace vmf::test {
namespace {

namespace rt = runtime::v1;
using std::chrono::milliseconds;

std::string Tail(const std::string& s, size_t n = 1024) { return s.size() <= n ? s : s.substr(s.size() - n); }

Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return OkStatus();
  // gRPC's codes are ours (common/status.h).
  int code = static_cast<int>(s.error_code());
  if (code < 0 || code > static_cast<int>(Code::kDataLoss)) code = static_cast<int>(Code::kUnknown);
  std::string message = what + ": " + s.error_message();
  if (!s.error_details().empty()) message += " (" + Tail(s.error_details(), 512) + ")";
  return Status(static_cast<Code>(code), message);
}

// Runs one unary call with a deadline `timeout` from now.
template <typename Resp, typename Fn>
Result<Resp> Call(const std::string& what, milliseconds timeout, Fn fn) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  Resp resp;
  grpc::Status s = fn(&ctx, &resp);
  if (!s.ok()) return FromGrpc(s, what);
  return resp;
}

rt::NamespaceOption HostNetwork() {
  rt::NamespaceOption ns;
  ns.set_network(rt::NODE);
  ns.set_pid(rt::POD);
  ns.set_ipc(rt::POD);
  return ns;
}

}  // namespace

std::string ExecSyncResult::Describe() const {
  return "exit " + std::to_string(exit_code) + ", stdout: \"" + Tail(out) + "\", stderr: \"" + Tail(err) +
         "\"";
}

std::string ContainerStateName(rt::ContainerState state) { return rt::ContainerState_Name(state); }

Result<std::unique_ptr<CriClient>> CriClient::Connect(const std::string& socket_path, milliseconds timeout) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);  // ExecSync's output comes in one message
  std::unique_ptr<CriClient> c(new CriClient());
  c->channel_ = grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  if (!c->channel_->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    return Unavailable("no gRPC server answers on " + socket_path + " within " +
                       std::to_string(timeout.count()) + " ms");
  }
  c->runtime_ = rt::RuntimeService::NewStub(c->channel_);
  c->images_ = rt::ImageService::NewStub(c->channel_);
  return c;
}

rt::PodSandboxConfig CriClient::HostNetworkPod(const std::string& name, const std::string& uid,
                                               const std::string& ns) {
  rt::PodSandboxConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_metadata()->set_uid(uid);
  config.mutable_metadata()->set_namespace_(ns);
  // No hostname, as kubelet for a hostNetwork pod: it keeps the node's
  // (runc refuses a hostname without a UTS namespace of its own).
  *config.mutable_linux()->mutable_security_context()->mutable_namespace_options() = HostNetwork();
  return config;
}

rt::ContainerConfig CriClient::Container(const std::string& name, const std::string& image,
                                         const std::vector<std::string>& command,
                                         const std::vector<std::string>& args) {
  rt::ContainerConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_image()->set_image(image);
  for (const auto& a : command) config.add_command(a);
  for (const auto& a : args) config.add_args(a);
  *config.mutable_linux()->mutable_security_context()->mutable_namespace_options() = HostNetwork();
  return config;
}

Result<rt::VersionResponse> CriClient::Version(milliseconds timeout) {
  rt::VersionRequest req;
  req.set_version("v1");
  return Call<rt::VersionResponse>("RuntimeService.Version", timeout,
                                   [&](auto* ctx, auto* resp) { return runtime_->Version(ctx, req, resp); });
}

Result<std::string> CriClient::RunPodSandbox(const rt::PodSandboxConfig& config,
                                             const std::string& runtime_handler, milliseconds timeout) {
  rt::RunPodSandboxRequest req;
  *req.mutable_config() = config;
  req.set_runtime_handler(runtime_handler);
  VMF_ASSIGN_OR_RETURN(
      rt::RunPodSandboxResponse resp,
      Call<rt::RunPodSandboxResponse>("RuntimeService.RunPodSandbox", timeout, [&](auto* ctx, auto* resp) {
        return runtime_->RunPodSandbox(ctx, req, resp);
      }));
  return resp.pod_sandbox_id();
}

Status CriClient::StopPodSandbox(const std::string& pod_id, milliseconds timeout) {
  rt::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(pod_id);
  return Call<rt::StopPodSandboxResponse>(
             "RuntimeService.StopPodSandbox", timeout,
             [&](auto* ctx, auto* resp) { return runtime_->StopPodSandbox(ctx, req, resp); })
      .status();
}

Status CriClient::RemovePodSandbox(const std::string& pod_id, milliseconds timeout) {
  rt::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(pod_id);
  return Call<rt::RemovePodSandboxResponse>(
             "RuntimeService.RemovePodSandbox", timeout,
             [&](auto* ctx, auto* resp) { return runtime_->RemovePodSandbox(ctx, req, resp); })
      .status();
}

Result<rt::PodSandboxStatusResponse> CriClient::PodSandboxStatus(const std::string& pod_id,
                                                                 milliseconds timeout) {
  rt::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(pod_id);
  return Call<rt::PodSandboxStatusResponse>(
      "RuntimeService.PodSandboxStatus", timeout,
      [&](auto* ctx, auto* resp) { return runtime_->PodSandboxStatus(ctx, req, resp); });
}

Result<std::vector<rt::PodSandbox>> CriClient::ListPodSandbox(milliseconds timeout) {
  rt::ListPodSandboxRequest req;
  VMF_ASSIGN_OR_RETURN(
      rt::ListPodSandboxResponse resp,
      Call<rt::ListPodSandboxResponse>("RuntimeService.ListPodSandbox", timeout, [&](auto* ctx, auto* resp) {
        return runtime_->ListPodSandbox(ctx, req, resp);
      }));
  return std::vector<rt::PodSandbox>(resp.items().begin(), resp.items().end());
}

Result<std::string> CriClient::CreateContainer(const std::string& pod_id, const rt::ContainerConfig& config,
                                               const rt::PodSandboxConfig& sandbox_config,
                                               milliseconds timeout) {
  rt::CreateContainerRequest req;
  req.set_pod_sandbox_id(pod_id);
  *req.mutable_config() = config;
  *req.mutable_sandbox_config() = sandbox_config;
  VMF_ASSIGN_OR_RETURN(rt::CreateContainerResponse resp,
                       Call<rt::CreateContainerResponse>(
                           "RuntimeService.CreateContainer", timeout,
                           [&](auto* ctx, auto* resp) { return runtime_->CreateContainer(ctx, req, resp); }));
  return resp.container_id();
}

Status CriClient::StartContainer(const std::string& id, milliseconds timeout) {
  rt::StartContainerRequest req;
  req.set_container_id(id);
  return Call<rt::StartContainerResponse>(
             "RuntimeService.StartContainer", timeout,
             [&](auto* ctx, auto* resp) { return runtime_->StartContainer(ctx, req, resp); })
      .status();
}

Status CriClient::StopContainer(const std::string& id, int64_t grace_seconds, milliseconds timeout) {
  rt::StopContainerRequest req;
  req.set_container_id(id);
  req.set_timeout(grace_seconds);
  return Call<rt::StopContainerResponse>(
             "RuntimeService.StopContainer", timeout,
             [&](auto* ctx, auto* resp) { return runtime_->StopContainer(ctx, req, resp); })
      .status();
}

Status CriClient::RemoveContainer(const std::string& id, milliseconds timeout) {
  rt::RemoveContainerRequest req;
  req.set_container_id(id);
  return Call<rt::RemoveContainerResponse>(
             "RuntimeService.RemoveContainer", timeout,
             [&](auto* ctx, auto* resp) { return runtime_->RemoveContainer(ctx, req, resp); })
      .status();
}

Result<rt::ContainerStatus> CriClient::ContainerStatus(const std::string& id, milliseconds timeout) {
  rt::ContainerStatusRequest req;
  req.set_container_id(id);
  VMF_ASSIGN_OR_RETURN(rt::ContainerStatusResponse resp,
                       Call<rt::ContainerStatusResponse>(
                           "RuntimeService.ContainerStatus", timeout,
                           [&](auto* ctx, auto* resp) { return runtime_->ContainerStatus(ctx, req, resp); }));
  return resp.status();
}

Result<rt::ContainerStats> CriClient::ContainerStats(const std::string& id, milliseconds timeout) {
  rt::ContainerStatsRequest req;
  req.set_container_id(id);
  VMF_ASSIGN_OR_RETURN(
      rt::ContainerStatsResponse resp,
      Call<rt::ContainerStatsResponse>("RuntimeService.ContainerStats", timeout, [&](auto* ctx, auto* resp) {
        return runtime_->ContainerStats(ctx, req, resp);
      }));
  return resp.stats();
}

Result<std::vector<rt::Container>> CriClient::ListContainers(const std::string& pod_id,
                                                             milliseconds timeout) {
  rt::ListContainersRequest req;
  if (!pod_id.empty()) req.mutable_filter()->set_pod_sandbox_id(pod_id);
  VMF_ASSIGN_OR_RETURN(
      rt::ListContainersResponse resp,
      Call<rt::ListContainersResponse>("RuntimeService.ListContainers", timeout, [&](auto* ctx, auto* resp) {
        return runtime_->ListContainers(ctx, req, resp);
      }));
  return std::vector<rt::Container>(resp.containers().begin(), resp.containers().end());
}

Result<ExecSyncResult> CriClient::ExecSync(const std::string& id, const std::vector<std::string>& cmd,
                                           std::chrono::seconds timeout) {
  rt::ExecSyncRequest req;
  req.set_container_id(id);
  for (const auto& a : cmd) req.add_cmd(a);
  const int64_t secs = std::max<int64_t>(timeout.count(), 1);
  req.set_timeout(secs);
  // The server ends the command at its timeout and answers then: the call
  // itself gets a little more.
  VMF_ASSIGN_OR_RETURN(
      rt::ExecSyncResponse resp,
      Call<rt::ExecSyncResponse>("RuntimeService.ExecSync", milliseconds(secs * 1000 + 5000),
                                 [&](auto* ctx, auto* resp) { return runtime_->ExecSync(ctx, req, resp); }));
  ExecSyncResult r;
  r.exit_code = resp.exit_code();
  r.out = resp.stdout();
  r.err = resp.stderr();
  return r;
}

Result<rt::Image> CriClient::ImageStatus(const std::string& ref, milliseconds timeout) {
  rt::ImageStatusRequest req;
  req.mutable_image()->set_image(ref);
  VMF_ASSIGN_OR_RETURN(
      rt::ImageStatusResponse resp,
      Call<rt::ImageStatusResponse>("ImageService.ImageStatus", timeout, [&](auto* ctx, auto* resp) {
        return images_->ImageStatus(ctx, req, resp);
      }));
  if (!resp.has_image()) return NotFound("ImageService.ImageStatus: no image " + ref);
  return resp.image();
}

Result<std::vector<rt::Image>> CriClient::ListImages(milliseconds timeout) {
  rt::ListImagesRequest req;
  VMF_ASSIGN_OR_RETURN(
      rt::ListImagesResponse resp,
      Call<rt::ListImagesResponse>("ImageService.ListImages", timeout, [&](auto* ctx, auto* resp) {
        return images_->ListImages(ctx, req, resp);
      }));
  return std::vector<rt::Image>(resp.images().begin(), resp.images().end());
}

}  // namespace vmf::test
