#include "bench/containers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "bench/oci_image.h"
#include "bench/percentile.h"
#include "bench/private_containerd.h"
#include "common/census.h"
#include "common/io.h"
#include "common/process.h"
#include "common/procfs.h"
#include "daemon/client.h"

namespace vmf {
namespace {

using namespace std::chrono_literals;
constexpr char kShimRuntime[] = "io.containerd.vmfactory.v2";
constexpr char kRuncRuntime[] = "io.containerd.runc.v2";
constexpr int kPoolSize = 2;

// The directory our binaries are in: where containerd finds the shim.
std::string BinDir() {
  std::string self = SelfExe();
  return self.substr(0, self.rfind('/'));
}

class ContainerBench {
 public:
  ContainerBench(const ContainerBenchOptions& o, CancelToken* cancel)
      : o_(o),
        cancel_(cancel),
        runtime_(o.dir + "/c"),
        socket_(runtime_ + "/daemon.sock") {}  // short: socket paths
  ~ContainerBench() {
    daemon_.Stop(std::chrono::seconds(10));
    if (ctrd_) ctrd_->Stop();
  }

  ContainerBenchResult Run() {
    ContainerBenchResult r;
    r.status = Setup();
    if (!r.status.ok()) return r;
    for (const char* source : {"runc", "pool", "template", "cold"}) {
      if (cancel_->cancelled()) break;
      r.sources.push_back(Measure(source));
    }
    if (!cancel_->cancelled()) r.memory_status = MeasureMemory(&r);
    return r;
  }

 private:
  Status Setup() {
    if (::geteuid() != 0) return FailedPrecondition("the container modes need root (containerd)");
    for (const char* tool : {"containerd", "ctr", "runc", "mkfs.ext4"}) {
      if (FindProgram(tool).empty()) return FailedPrecondition(std::string(tool) + " is not installed");
    }
    if (::access((BinDir() + "/containerd-shim-vmfactory-v2").c_str(), X_OK) != 0) {
      return FailedPrecondition("containerd-shim-vmfactory-v2 is not beside " + SelfExe());
    }
    VMF_RETURN_IF_ERROR(MakeDirs(runtime_));
    VMF_ASSIGN_OR_RETURN(ctrd_, ctrd::PrivateContainerd::Start(BinDir(), 60s));
    const std::string tar = ctrd_->dir() + "/image.tar";
    VMF_RETURN_IF_ERROR(ctrd::BuildBusyboxImage(tar, ctrd::kTestImageRef));
    VMF_RETURN_IF_ERROR(ctrd_->ImportImage(tar));
    return OkStatus();
  }

  // The shim's config for a source: the bench's image, size and runtime
  // dir; the template and the daemon only where the source uses them.
  Result<std::string> ShimConfig(const std::string& source) {
    const std::string path = runtime_ + "/" + source + ".toml";
    const auto& h = o_.config.hypervisor;
    std::string text =
        "[hypervisor.qemu]\nkernel = \"" + h.kernel + "\"\ninitrd = \"" + h.initrd +
        "\"\ndefault_vcpus = " + std::to_string(h.vcpus) +
        "\ndefault_memory = " + std::to_string(h.memory_mib) + "\n[factory]\ntemplate_path = \"" +
        (source == "cold" ? runtime_ + "/no-template" : o_.template_root) + "\"\nvm_cache_endpoint = \"" +
        (source == "pool" ? socket_ : runtime_ + "/no-daemon.sock") + "\"\n[runtime]\ndir = \"" + runtime_ +
        "\"\n";
    VMF_RETURN_IF_ERROR(WriteFileAtomic(path, text, 0600));
    return path;
  }

  std::vector<std::string> RunArgs(const std::string& source, const std::string& id,
                                   const std::vector<std::string>& extra,
                                   const std::vector<std::string>& cmd) {
    std::vector<std::string> args = extra;
    if (source == "runc") {
      args.insert(args.end(), {"--runtime", kRuncRuntime});
    } else {
      args.insert(args.end(),
                  {"--runtime", kShimRuntime, "--runtime-config-path", runtime_ + "/" + source + ".toml"});
    }
    args.emplace_back(ctrd::kTestImageRef);
    args.push_back(id);
    args.insert(args.end(), cmd.begin(), cmd.end());
    return ctrd_->RunArgs(args);
  }

  ContainerSourceResult Measure(const std::string& source) {
    ContainerSourceResult r{source, OkStatus(), {}, {}, {}};
    r.status = [&]() -> Status {
      if (source != "runc") VMF_RETURN_IF_ERROR(ShimConfig(source).status());
      if (source == "pool") VMF_RETURN_IF_ERROR(StartDaemon());
      for (int i = 1; i <= o_.iterations; ++i) {
        if (cancel_->cancelled()) return Cancelled("interrupted");
        if (source == "pool") VMF_RETURN_IF_ERROR(WaitPoolFull());
        const std::string id = "bench-" + source + "-" + std::to_string(i);
        const auto t0 = Clock::now();
        VMF_ASSIGN_OR_RETURN(ctrd::CtrResult run,
                             ctrd_->Ctr(RunArgs(source, id, {"--rm"}, {"/bin/true"}), 300s));
        const Duration d = std::chrono::duration_cast<Duration>(Clock::now() - t0);
        if (run.exit_code != 0) {
          return Internal("ctr run (" + source + "): " + run.Describe().substr(0, 2000));
        }
        std::fprintf(stderr, "bench: ctr run --rm /bin/true, %s %d/%d: %lld ms\n", source.c_str(), i,
                     o_.iterations, static_cast<long long>(d.count()));
        r.samples.push_back(d);
      }
      return OkStatus();
    }();
    if (source == "pool") daemon_.Stop(std::chrono::seconds(10));
    r.p50 = Percentile(r.samples, 50);
    r.p95 = Percentile(r.samples, 95);
    return r;
  }

  // One pod with a container running (a template clone): the shim's RSS,
  // its QEMU's RSS and PSS.
  Status MeasureMemory(ContainerBenchResult* r) {
    VMF_RETURN_IF_ERROR(ShimConfig("template").status());
    VMF_ASSIGN_OR_RETURN(ctrd::CtrResult run,
                         ctrd_->Ctr(RunArgs("template", "bench-memory", {"-d"}, {"sleep", "100000"}), 300s));
    if (run.exit_code != 0) return Internal("ctr run -d: " + run.Describe().substr(0, 2000));
    std::this_thread::sleep_for(1s);  // settled: the container runs
    Status st = [&]() -> Status {
      pid_t shim = FindProcessMentioningAll({"containerd-shim-vmfactory-v2", "bench-memory"});
      pid_t qemu = FindProcessMentioningAll({runtime_ + "/vm/", "qemu-system"});
      if (shim <= 0 || qemu <= 0) return NotFound("the pod's shim or QEMU is not running");
      VMF_ASSIGN_OR_RETURN(r->shim_rss_kib,
                           ReadKbLine("/proc/" + std::to_string(shim) + "/status", "VmRSS:"));
      VMF_ASSIGN_OR_RETURN(r->qemu_rss_kib,
                           ReadKbLine("/proc/" + std::to_string(qemu) + "/status", "VmRSS:"));
      VMF_ASSIGN_OR_RETURN(r->qemu_pss_kib,
                           ReadKbLine("/proc/" + std::to_string(qemu) + "/smaps_rollup", "Pss:"));
      return OkStatus();
    }();
    (void)ctrd_->Ctr({"tasks", "kill", "-s", "SIGKILL", "bench-memory"}, 60s);
    for (int i = 0; i < 100; ++i) {
      auto ls = ctrd_->Ctr({"tasks", "ls"}, 30s);
      if (!ls.ok() || ls->out.find("RUNNING") == std::string::npos) break;
      std::this_thread::sleep_for(100ms);
    }
    (void)ctrd_->Ctr({"tasks", "delete", "bench-memory"}, 60s);
    (void)ctrd_->Ctr({"containers", "delete", "bench-memory"}, 60s);
    return st;
  }

  Status StartDaemon() {
    std::vector<std::string> argv = {SelfExe(),        "--template-path",
                                     o_.template_root, "--socket",
                                     socket_,          "serve",
                                     "--cache",        std::to_string(kPoolSize),
                                     "--metrics",      "",
                                     "--cpus",         std::to_string(o_.config.hypervisor.vcpus),
                                     "--memory",       std::to_string(o_.config.hypervisor.memory_mib),
                                     "--kernel",       o_.config.hypervisor.kernel,
                                     "--initrd",       o_.config.hypervisor.initrd};
    UniqueFd log(::open((runtime_ + "/daemon.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!log) return ErrnoStatus(errno, "open the daemon log");
    SpawnOptions so;
    so.stderr_fd = log.get();
    ::setenv("VMF_RUNTIME_DIR", (runtime_ + "/d").c_str(), 1);
    auto child = ChildProcess::Spawn(argv, so);
    ::unsetenv("VMF_RUNTIME_DIR");
    VMF_ASSIGN_OR_RETURN(daemon_, std::move(child));
    return OkStatus();
  }

  Status WaitPoolFull() {
    auto full = WaitForFullPool(socket_, kPoolSize, Deadline(std::chrono::seconds(180)), [&]() -> Status {
      if (cancel_->cancelled()) return Cancelled("interrupted");
      if (!daemon_.Running()) return Unavailable("the daemon exited; see " + runtime_ + "/daemon.log");
      return OkStatus();
    });
    return full.status().WithContext("the daemon's pool did not fill");
  }

  const ContainerBenchOptions& o_;
  CancelToken* cancel_;
  std::string runtime_, socket_;
  std::unique_ptr<ctrd::PrivateContainerd> ctrd_;
  ChildProcess daemon_;
};

}  // namespace

ContainerBenchResult MeasureContainers(const ContainerBenchOptions& options, CancelToken* cancel) {
  return ContainerBench(options, cancel).Run();
}

}  // namespace vmf
