// vmfactory: the command-line front end.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "cli/run.h"
#include "common/log.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmfactory: hardware-isolated Linux VMs, fast"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();

  vmf::RunOptions run;
  run.config = vmf::DefaultVMConfig();
  auto* run_cmd = app.add_subcommand("run", "run a command in a fresh VM and exit with its status");
  run_cmd->add_option("--cpus", run.config.hypervisor.vcpus, "vCPUs")->capture_default_str();
  run_cmd->add_option("--memory", run.config.hypervisor.memory_mib, "memory in MiB")->capture_default_str();
  run_cmd->add_option("--timeout", run.timeout_s, "stop the VM after this many seconds (0: never)");
  run_cmd->add_option("--kernel", run.config.hypervisor.kernel, "guest kernel")->capture_default_str();
  run_cmd->add_option("--initrd", run.config.hypervisor.initrd, "guest initramfs")->capture_default_str();
  run_cmd->add_flag("-v,--verbose", run.verbose, "print how long each step took");
  run_cmd->add_option("command", run.command, "command and arguments (after --)")->required();

  auto* version_cmd = app.add_subcommand("version", "print the version");
  CLI11_PARSE(app, argc, argv);

  vmf::InitLogging(log_level);
  if (version_cmd->parsed()) {
    std::printf("vmfactory %s\n", VMF_VERSION);
    return 0;
  }
  vmf::CancelToken cancel;
  SignalWatcher signals(&cancel);
  if (run_cmd->parsed()) {
    if (run.config.hypervisor.max_vcpus < run.config.hypervisor.vcpus) {
      run.config.hypervisor.max_vcpus = run.config.hypervisor.vcpus;
    }
    if (run.config.hypervisor.max_memory_mib < run.config.hypervisor.memory_mib) {
      run.config.hypervisor.max_memory_mib = run.config.hypervisor.memory_mib;
    }
    return vmf::RunCommand(run, &cancel, signals.signal_seen());
  }
  return 0;
}
