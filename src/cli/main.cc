// vmfactory: the command-line front end.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <thread>

#include "bench/bench.h"
#include "cli/run.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "config/config_file.h"
#include "daemon/client.h"
#include "daemon/daemon.h"
#include "factory/template.h"
#include "soak/soak.h"
#include "vm/config.h"

namespace {

// Blocks the stop signals in every thread and waits for them on one thread,
// which cancels whatever is in progress.
class SignalWatcher {
 public:
  explicit SignalWatcher(vmf::CancelToken* cancel) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    sigaddset(&set_, SIGUSR2);  // our own wake-up at exit
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this, cancel] {
      int sig = 0;
      while (sigwait(&set_, &sig) == 0) {
        if (sig == SIGUSR2) return;
        signal_ = sig;
        cancel->Cancel();
      }
    });
  }
  ~SignalWatcher() {
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }
  const int* signal_seen() const { return &signal_; }

 private:
  sigset_t set_;
  int signal_ = 0;
  std::thread thread_;
};

void AddVmOptions(CLI::App* cmd, vmf::VMConfig* c) {
  cmd->add_option("--cpus", c->hypervisor.vcpus, "vCPUs")->capture_default_str();
  cmd->add_option("--memory", c->hypervisor.memory_mib, "memory in MiB")->capture_default_str();
  cmd->add_option("--kernel", c->hypervisor.kernel, "guest kernel")->capture_default_str();
  cmd->add_option("--initrd", c->hypervisor.initrd, "guest initramfs")->capture_default_str();
}

int Fail(const vmf::Status& st) {
  std::fprintf(stderr, "vmfactory: %s\n", st.ToString().c_str());
  return 1;
}

std::string Age(int64_t created) {
  int64_t s = static_cast<int64_t>(::time(nullptr)) - created;
  if (s < 120) return std::to_string(s) + " s";
  if (s < 7200) return std::to_string(s / 60) + " min";
  return std::to_string(s / 3600) + " h";
}

int Init(vmf::VMConfig config, const std::string& root, bool force) {
  vmf::FitCeilings(&config.hypervisor);
  auto start = vmf::Clock::now();
  auto progress = [&](const std::string& step) {
    auto now = vmf::Clock::now();
    std::fprintf(stderr, "vmfactory init: [%6.2f s] %s\n", std::chrono::duration<double>(now - start).count(),
                 step.c_str());
  };
  vmf::TemplateOptions options;
  options.force = force;
  options.progress = progress;
  auto t = vmf::CreateTemplate(config, root, options);
  if (!t.ok()) return Fail(t.status());
  std::printf("template ready at %s (%u vCPUs, %u MiB) in %.2f s\n", t->generation.c_str(),
              t->hypervisor.vcpus, t->hypervisor.memory_mib,
              std::chrono::duration<double>(vmf::Clock::now() - start).count());
  return 0;
}

int PrintStatus(const std::string& root) {
  auto t = vmf::LoadTemplate(root);
  if (!t.ok()) {
    std::printf("template: none usable at %s\n  %s\n", root.c_str(), t.status().ToString().c_str());
    return t.status().code() == vmf::Code::kNotFound ? 0 : 1;
  }
  std::printf("template: %s\n", t->generation.c_str());
  std::printf("  kernel:   %s\n  initrd:   %s\n", t->hypervisor.kernel.c_str(), t->hypervisor.initrd.c_str());
  std::printf("  machine:  %s, %u vCPUs (max %u), %u MiB (max %u, %u slots)\n",
              t->hypervisor.qemu.machine.c_str(), t->hypervisor.vcpus, t->hypervisor.max_vcpus,
              t->hypervisor.memory_mib, t->hypervisor.max_memory_mib, t->hypervisor.qemu.memory_slots);
  std::printf("  size:     %.1f MiB memory + %.1f KiB device state\n", t->memory_bytes / 1048576.0,
              t->state_bytes / 1024.0);
  std::printf("  age:      %s (format version %d)\n", Age(t->created_unix).c_str(), t->format_version);
  return 0;
}

// `--config FILE` must be known before the other options get their
// defaults from it, so it is found ahead of the full parse.
std::string FindConfigArg(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") break;
    if (a == "--config" && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--config=", 0) == 0) return a.substr(9);
  }
  return "";
}

// ", memory 180/512 MiB, 12 tasks" from a VM's cgroup usage; "" without limits.
template <typename Entry>
std::string DescribeUsage(const Entry& e) {
  if (!e.has_usage()) return "";
  const auto& u = e.usage();
  std::string s = ", memory " + std::to_string(u.memory_bytes() >> 20);
  if (u.memory_limit_bytes() != 0) s += "/" + std::to_string(u.memory_limit_bytes() >> 20);
  s += " MiB, " + std::to_string(u.pids()) + " tasks";
  if (u.oom_kills() != 0) s += ", " + std::to_string(u.oom_kills()) + " killed by its memory limit";
  return s;
}

int PrintDaemonStatus(const std::string& socket) {
  auto client = vmf::DaemonClient::Connect(socket);
  if (!client.ok()) {
    std::printf("daemon: not running (%s)\n", socket.c_str());
    return 0;
  }
  auto s = (*client)->GetStatus();
  if (!s.ok()) return Fail(s.status());
  std::printf("daemon: pid %d on %s, base %s\n", s->daemon_pid(), socket.c_str(), s->base_source().c_str());
  std::printf("  pool: %d ready of %d, %d booting, %llu failed", s->ready_size(), s->target(), s->booting(),
              static_cast<unsigned long long>(s->failures()));
  if (s->replaced() > 0) std::printf(", %llu replaced", static_cast<unsigned long long>(s->replaced()));
  std::printf("\n");
  if (!s->last_error().empty()) {
    std::printf("  last error: %s (next try in %lld ms)\n", s->last_error().c_str(),
                static_cast<long long>(s->retry_in_ms()));
  }
  if (s->has_restore()) {
    const auto& r = s->restore();
    uint64_t pss = 0;
    for (const auto& w : r.waiting()) pss += w.pss_bytes();
    std::printf("  restore targets: %d waiting of %d, %d starting, %llu taken, %llu failed, %llu replaced",
                r.waiting_size(), r.target(), r.starting(), static_cast<unsigned long long>(r.taken()),
                static_cast<unsigned long long>(r.failures()), static_cast<unsigned long long>(r.replaced()));
    if (r.waiting_size() > 0) std::printf(", PSS %.1f MiB each", pss / 1048576.0 / r.waiting_size());
    std::printf("\n");
    if (!r.last_error().empty()) {
      std::printf("  restore target error: %s (next try in %lld ms)\n", r.last_error().c_str(),
                  static_cast<long long>(r.retry_in_ms()));
    }
    for (const auto& w : r.waiting()) {
      std::printf("  waiting    %s qemu pid %d proxy pid %d, PSS %.1f MiB%s\n", w.id().c_str(), w.vmm_pid(),
                  w.proxy_pid(), w.pss_bytes() / 1048576.0, DescribeUsage(w).c_str());
    }
  }
  for (const auto& r : s->ready()) {
    std::printf("  ready      %s qemu pid %d proxy pid %d%s\n", r.id().c_str(), r.vmm_pid(), r.proxy_pid(),
                DescribeUsage(r).c_str());
  }
  for (const auto& h : s->handed_out()) {
    std::printf("  handed out %s qemu pid %d proxy pid %d owner pid %d%s\n", h.id().c_str(), h.vmm_pid(),
                h.proxy_pid(), h.owner_pid(), DescribeUsage(h).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Defaults come from the config file when one is given, else built in.
  vmf::Config config = vmf::DefaultConfig();
  std::string config_path = FindConfigArg(argc, argv);
  if (!config_path.empty()) {
    auto loaded = vmf::LoadConfigFile(config_path);
    if (!loaded.ok()) {
      std::fprintf(stderr, "vmfactory: %s\n", loaded.status().ToString().c_str());
      return 2;
    }
    config = std::move(*loaded);
  }

  CLI::App app{"vmfactory: hardware-isolated Linux VMs, fast"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--config", config_path, "TOML configuration file (built-in defaults without one)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  std::string template_root = config.factory.template_path;
  app.add_option("--template-path", template_root, "template directory")->capture_default_str();
  std::string daemon_socket = config.factory.vm_cache_endpoint;
  app.add_option("--socket", daemon_socket, "the daemon's socket")->capture_default_str();

  vmf::RunOptions run;
  run.config = config.vm;
  auto* run_cmd = app.add_subcommand("run", "run a command in a fresh VM and exit with its status");
  AddVmOptions(run_cmd, &run.config);
  run_cmd->add_option("--timeout", run.timeout_s, "stop the VM after this many seconds (0: never)");
  run_cmd->add_flag("-v,--verbose", run.verbose, "print how long each step took");
  run_cmd->add_flag("--cold", run.cold, "cold boot, even if a daemon or a template is there");
  run_cmd
      ->add_option("--rootfs", run.rootfs,
                   "run the command as a container in this directory tree (an image's rootfs); "
                   "what it writes goes to a copy")
      ->check(CLI::ExistingDirectory);
  run_cmd->add_option("command", run.command, "command and arguments (after --)")->required();

  vmf::VMConfig init_config = config.vm;
  bool force = false;
  auto* init_cmd = app.add_subcommand("init", "make the template VM that clones start from");
  AddVmOptions(init_cmd, &init_config);
  init_cmd->add_flag("--force", force, "replace an existing template");

  vmf::DaemonOptions serve;
  serve.vm = config.vm;
  serve.cache_number = config.factory.vm_cache_number;
  serve.parallelism = config.factory.vm_cache_parallelism;
  serve.restore_targets = config.factory.restore_targets;
  serve.use_template = config.factory.enable_template;
  serve.metrics_address = config.metrics.address;
  auto* serve_cmd = app.add_subcommand("serve", "keep a pool of ready VMs and hand them to other processes");
  AddVmOptions(serve_cmd, &serve.vm);
  serve_cmd->add_option("--cache", serve.cache_number, "VMs kept ready")->capture_default_str();
  serve_cmd->add_option("--parallelism", serve.parallelism, "concurrent refills")->capture_default_str();
  serve_cmd
      ->add_option("--restore-targets", serve.restore_targets,
                   "template clones kept started and waiting for their state")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  serve_cmd->add_option("--metrics", serve.metrics_address, "host:port for Prometheus metrics; \"\" disables")
      ->capture_default_str();
  bool no_template = false;
  serve_cmd->add_flag("--no-template", no_template, "cold-boot the pool even if a template exists");

  vmf::BenchOptions bench;
  bench.config = config.vm;
  bench.command_line.assign(argv, argv + argc);
  bench.config_path = config_path;
  auto* bench_cmd =
      app.add_subcommand("bench", "time and size VMs from each source (factory and plain QEMU) in one run");
  AddVmOptions(bench_cmd, &bench.config);
  bench_cmd
      ->add_option(
          "--modes", bench.modes,
          "comma-separated: cold, template, cache, qemu-cold, qemu-loadvm, template-unconfined, daemon-load, "
          "containers (ctr run under a private containerd: runc vs the shim; needs root and containerd)")
      ->delimiter(',')
      ->capture_default_str();
  bench_cmd->add_option("--iterations", bench.iterations, "latency samples per mode")->capture_default_str();
  bench_cmd->add_option("--concurrency", bench.concurrency, "requests at once for the throughput figure")
      ->capture_default_str();
  bench_cmd->add_option("--concurrency-mem", bench.concurrency_mem, "VMs alive at once to measure memory")
      ->capture_default_str();
  bench_cmd->add_option("--json", bench.json_path, "write every figure to this JSON file");
  bench_cmd->add_option("--plot", bench.plot_path,
                        "draw latency and memory per mode into this PNG (gnuplot)");

  vmf::SoakOptions soak;
  soak.config = config.vm;
  soak.command_line.assign(argv, argv + argc);
  auto* soak_cmd = app.add_subcommand(
      "soak",
      "GetVM/exec/stop cycles through a private daemon with faults injected; checks that nothing leaks");
  AddVmOptions(soak_cmd, &soak.config);
  soak_cmd->add_option("--duration", soak.duration_s, "seconds to run")->capture_default_str();
  soak_cmd->add_option("--fault-rate", soak.fault_rate, "share of cycles with a fault (0..1)")
      ->capture_default_str();
  soak_cmd->add_option("--pool", soak.pool, "VMs the daemon keeps ready")->capture_default_str();
  soak_cmd->add_option("--seed", soak.seed, "random seed (0: random)")->capture_default_str();
  soak_cmd->add_option("--json", soak.json_path, "write the summary to this JSON file");

  auto* status_cmd = app.add_subcommand("status", "describe the daemon, its pool and the template");
  auto* destroy_cmd = app.add_subcommand("destroy", "stop the daemon and remove the template completely");
  auto* version_cmd = app.add_subcommand("version", "print the version");
  CLI11_PARSE(app, argc, argv);

  vmf::InitLogging(serve_cmd->parsed() && log_level == "warn" ? "info" : log_level);
  if (version_cmd->parsed()) {
    std::printf("vmfactory %s\n", VMF_VERSION);
    return 0;
  }
  if (status_cmd->parsed()) {
    int rc = PrintDaemonStatus(daemon_socket);
    return std::max(rc, PrintStatus(template_root));
  }
  if (destroy_cmd->parsed()) {
    if (auto client = vmf::DaemonClient::Connect(daemon_socket); client.ok()) {
      vmf::Status st = (*client)->Quit();
      if (!st.ok()) return Fail(st);
      // The daemon removes its socket once its pool is stopped.
      vmf::Deadline d(std::chrono::seconds(60));
      while (vmf::DaemonClient::Connect(daemon_socket).ok() && !d.expired()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      std::printf("stopped the daemon on %s\n", daemon_socket.c_str());
    }
    vmf::Status st = vmf::DestroyTemplate(template_root);
    if (st.code() == vmf::Code::kNotFound) {
      std::printf("no template at %s\n", template_root.c_str());
      return 0;
    }
    if (!st.ok()) return Fail(st);
    std::printf("removed the template at %s\n", template_root.c_str());
    return 0;
  }
  vmf::CancelToken cancel;
  SignalWatcher signals(&cancel);
  if (init_cmd->parsed()) return Init(init_config, template_root, force);
  if (run_cmd->parsed()) {
    vmf::FitCeilings(&run.config.hypervisor);
    run.template_root = template_root;
    run.daemon_socket = daemon_socket;
    return vmf::RunCommand(run, &cancel, signals.signal_seen());
  }
  if (serve_cmd->parsed()) {
    // Fault injection for soak runs only: VMF_FAILPOINTS is never set otherwise.
    if (vmf::Status fp = vmf::failpoint::InstallFromEnv(); !fp.ok()) return Fail(fp);
    vmf::FitCeilings(&serve.vm.hypervisor);
    serve.socket_path = daemon_socket;
    serve.template_path = template_root;
    if (no_template) serve.use_template = false;
    vmf::Status st = vmf::RunDaemon(serve, &cancel);
    if (!st.ok()) return Fail(st);
    return 0;
  }
  if (soak_cmd->parsed()) {
    vmf::FitCeilings(&soak.config.hypervisor);
    return vmf::RunSoak(soak, &cancel);
  }
  if (bench_cmd->parsed()) {
    vmf::FitCeilings(&bench.config.hypervisor);
    return vmf::RunBench(bench, &cancel, signals.signal_seen());
  }
  return 0;
}
