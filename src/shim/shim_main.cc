// containerd-shim-vmfactory-v2: the containerd shim v2 of vmfactory
// (runtime io.containerd.vmfactory.v2). See shim/task_service.h for what it
// serves and README.md ("containerd and Kubernetes") for how to use it.
//
//   start   (from containerd, cwd = the bundle): prints the ttrpc address of
//           the shim serving this container's pod, starting that shim first
//           unless the container joins a pod whose shim runs already.
//   delete  (from containerd, when the shim is gone): cleans up after it and
//           prints a DeleteResponse.
//   (none)  the serving shim: ttrpc on fd 3 until Shutdown.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/io.h"
#include "common/log.h"
#include "common/process.h"
#include "common/procfs.h"
#include "common/scoped_dir.h"
#include "config/config_file.h"
#include "container/oci_spec.h"
#include "container/rootfs.h"
#include "factory/digest.h"
#include "shim/events.h"
#include "shim/flags.h"
#include "shim/task_service.h"
#include "ttrpc/server.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf::shim {
namespace {

// The serving shim's socket for a pod: the same for every container of it,
// so that a pod container finds its sandbox's shim. Under 106 bytes.
std::string SocketPath(const std::string& runtime_dir, const ShimFlags& f, const std::string& pod_id) {
  return runtime_dir + "/shim/" + Sha256Hex(f.address + "/" + f.ns + "/" + pod_id).substr(0, 32) + ".sock";
}

// vmfactory's config for this shim: $VMF_CONFIG, else
// /etc/vmfactory/config.toml when it exists, else the built-in defaults.
Result<Config> ShimConfig() {
  const char* env = std::getenv("VMF_CONFIG");
  std::string path = env && *env ? env : "/etc/vmfactory/config.toml";
  if (!env && ::access(path.c_str(), F_OK) != 0) return DefaultConfig();
  return LoadConfigFile(path);
}

std::string Cwd() {
  char buf[4096];
  return ::getcwd(buf, sizeof(buf)) ? std::string(buf) : std::string(".");
}

int Start(const ShimFlags& f) {
  const std::string bundle = f.bundle.empty() ? Cwd() : f.bundle;
  auto spec = container::LoadBundleSpec(bundle);
  auto config = ShimConfig();
  if (!spec.ok() || !config.ok()) {
    std::fprintf(stderr, "%s\n", (spec.ok() ? config.status() : spec.status()).ToString().c_str());
    return 1;
  }
  const std::string runtime_dir =
      config->vm.runtime_dir.empty() ? DefaultRuntimeDir() : config->vm.runtime_dir;
  const bool joins_pod = spec->kind == container::BundleSpec::Kind::kPodContainer;
  const std::string path = SocketPath(runtime_dir, f, joins_pod ? spec->sandbox_id : f.id);
  const std::string address = "unix://" + path;
  if (joins_pod) {
    // The pod's shim serves this container too; containerd connects to it.
    (void)WriteFileAtomic(bundle + "/address", address, 0600);
    std::fputs(address.c_str(), stdout);
    return 0;
  }
  Status st = MakeDirs(runtime_dir + "/shim");
  if (st.ok()) ::chmod((runtime_dir + "/shim").c_str(), 0700);
  // A socket left by a shim that died is in the way; a live one is an error.
  if (st.ok() && ::access(path.c_str(), F_OK) == 0) {
    if (ConnectUnix(path).ok()) {
      st = AlreadyExists("a shim already serves " + f.ns + "/" + f.id + " at " + path);
    } else {
      ::unlink(path.c_str());
    }
  }
  Result<UniqueFd> listener = st.ok() ? ListenUnix(path) : Result<UniqueFd>(st);
  if (!listener.ok()) {
    std::fprintf(stderr, "%s\n", listener.status().ToString().c_str());
    return 1;
  }
  // The serving shim: fd 3 listens; its stderr is the bundle's log FIFO
  // (opened non-blocking: a full FIFO drops lines, never stalls the shim);
  // no other stdio, so containerd's read of our output ends when we exit.
  UniqueFd log(::open((bundle + "/log").c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  SpawnOptions so;
  so.pass_fds = {listener->get()};
  so.stderr_fd = log ? log.get() : -1;
  so.new_session = true;
  ShimFlags serve = f;
  serve.socket = path;
  auto child = ChildProcess::Spawn(ServeArgv(SelfExe(), serve), so);
  if (!child.ok()) {
    ::unlink(path.c_str());
    std::fprintf(stderr, "%s\n", child.status().ToString().c_str());
    return 1;
  }
  pid_t pid = child->Release();
  (void)WriteFileAtomic(bundle + "/shim.pid", std::to_string(pid), 0600);
  (void)WriteFileAtomic(bundle + "/address", address, 0600);
  std::fputs(address.c_str(), stdout);
  return 0;
}

// After the shim died: stop its VM if this bundle made it, unmount the
// rootfs, and tell containerd how the task ended (SIGKILL, now).
int Delete(const ShimFlags& f) {
  const std::string bundle = f.bundle.empty() ? Cwd() : f.bundle;
  InitLogging("warn");
  // containerd thinks the serving shim is gone; if it is not (it hangs),
  // it goes now: its VM cannot be taken over while it holds it.
  if (auto pid_text = ReadFile(bundle + "/shim.pid", 64); pid_text.ok()) {
    pid_t pid = static_cast<pid_t>(std::atoi(pid_text->c_str()));
    auto argv = pid > 0 ? ProcessArgv(pid) : std::vector<std::string>();
    if (!argv.empty() && argv[0].find("containerd-shim-vmfactory-v2") != std::string::npos) {
      // It may be ending by itself (stopping its VM after Shutdown).
      for (int i = 0; i < 200 && ProcessAlive(pid); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      ::kill(pid, SIGKILL);
      for (int i = 0; i < 100 && ProcessAlive(pid); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  const std::string handle_file = TaskService::HandleFile(bundle);
  if (auto bytes = ReadFile(handle_file, 1 << 20); bytes.ok()) {
    vmfactory::v1::VM h;
    auto config = ShimConfig();
    if (h.ParseFromString(*bytes) && config.ok()) StopVmOf(VMHandle::FromProto(h), config->vm);
    ::unlink(handle_file.c_str());
  }
  (void)container::UnmountRootfs(bundle + "/rootfs");
  // The socket of a shim that is gone (a pod's shim that still answers
  // keeps its own).
  if (auto address = ReadFile(bundle + "/address", 4096); address.ok() && address->rfind("unix://", 0) == 0) {
    const std::string path = address->substr(7);
    if (path.find("/shim/") != std::string::npos && !ConnectUnix(path).ok()) ::unlink(path.c_str());
  }
  containerd::task::v2::DeleteResponse r;
  r.set_exit_status(128 + SIGKILL);
  *r.mutable_exited_at() = NowTimestamp();
  std::string out = r.SerializeAsString();
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int Serve(const ShimFlags& f) {
  // Mounts of container rootfs stay in a mount namespace of our own: none
  // leaks into containerd's, and they all go when the shim does.
  if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
    std::fprintf(stderr, "vmfactory shim: private mount namespace: %s\n", std::strerror(errno));
    return 1;
  }
  ::signal(SIGPIPE, SIG_IGN);
  InitLogging(f.debug ? "debug" : "info");
  auto config = ShimConfig();
  if (!config.ok()) {
    spdlog::error("shim {}: {}", f.id, config.status().ToString());
    return 1;
  }
  const char* ttrpc_address = std::getenv("TTRPC_ADDRESS");
  EventPublisher events(ttrpc_address ? ttrpc_address : "", f.ns);
  ShimOptions opt;
  opt.ns = f.ns;
  opt.id = f.id;
  opt.config = std::move(*config);
  ttrpc::Server server(/*max_connections=*/64, /*max_inflight=*/64);
  auto service = std::make_unique<TaskService>(std::move(opt), &events);
  // From the Shutdown request's own thread, once (containerd may send it
  // more than once): let its reply go out first.
  std::once_flag stopping;
  std::thread stopper;
  service->OnShutdown([&] {
    std::call_once(stopping, [&] {
      stopper = std::thread([&server, &service] {
        service->StopVm();
        server.Shutdown();
      });
    });
  });
  service->Register(&server);
  spdlog::info("shim {} serving namespace {}", f.id, f.ns);
  Status st = server.Serve(UniqueFd(3));
  if (stopper.joinable()) stopper.join();
  if (!f.socket.empty()) ::unlink(f.socket.c_str());
  service.reset();  // stops the VM
  events.Flush(std::chrono::seconds(2));
  if (!st.ok()) {
    spdlog::error("shim {}: {}", f.id, st.ToString());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace vmf::shim

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto flags = vmf::shim::ParseShimFlags(args);
  if (!flags.ok()) {
    std::fprintf(stderr, "containerd-shim-vmfactory-v2: %s\n", flags.status().ToString().c_str());
    return 2;
  }
  if (flags->version) {
    std::printf("containerd-shim-vmfactory-v2 (vmfactory %s)\n", VMF_VERSION);
    return 0;
  }
  if (flags->ns.empty() || flags->id.empty()) {
    std::fprintf(stderr, "containerd-shim-vmfactory-v2: -namespace and -id are required\n");
    return 2;
  }
  if (flags->action == "start") return vmf::shim::Start(*flags);
  if (flags->action == "delete") return vmf::shim::Delete(*flags);
  return vmf::shim::Serve(*flags);
}
