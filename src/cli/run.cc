#include "cli/run.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "common/io.h"
#include "daemon/client.h"
#include "factory/factory.h"
#include "vm/vm.h"

namespace vmf {
namespace {

constexpr const char* kExecId = "run";
const Deadline kForever() { return Deadline(std::chrono::hours(24 * 365)); }

void PrintStep(const std::string& name, Duration d) {
  std::fprintf(stderr, "vmfactory: %-26s %7lld ms\n", name.c_str(), static_cast<long long>(d.count()));
}

// Copies one output stream of the guest process to a host fd until EOF.
void Pump(AgentClient* agent, bool stderr_stream, int out_fd, std::atomic<bool>* first_output,
          Clock::time_point* first_at) {
  for (;;) {
    auto data =
        stderr_stream ? agent->ReadStderr(kExecId, kForever()) : agent->ReadStdout(kExecId, kForever());
    if (!data.ok() || data->empty()) return;
    if (!first_output->exchange(true)) *first_at = Clock::now();
    (void)WriteAll(out_fd, *data, kForever());
  }
}

// Forwards our stdin to the guest process until EOF or until stop is set.
void ForwardStdin(AgentClient* agent, const std::atomic<bool>* stop) {
  char buf[65536];
  while (!stop->load()) {
    pollfd p{0, POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = ::read(0, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::string chunk(buf, static_cast<size_t>(n));
    while (!chunk.empty() && !stop->load()) {
      auto wrote = agent->WriteStdin(kExecId, chunk);
      if (!wrote.ok()) return;
      chunk.erase(0, *wrote);
      if (!chunk.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  (void)agent->CloseStdin(kExecId);
}

}  // namespace

Result<std::unique_ptr<VM>> AcquireVM(const RunOptions& opts, StepTimes* steps, CancelToken* cancel) {
  if (!opts.cold) {
    // 1. A running daemon's pool.
    std::string sock =
        opts.daemon_socket.empty() ? DefaultDaemonSocket(DefaultRuntimeDir()) : opts.daemon_socket;
    if (auto daemon = DaemonClient::Connect(sock); daemon.ok()) {
      StepTimer timer(steps);
      VMF_ASSIGN_OR_RETURN(auto handed,
                           (*daemon)->GetVM(opts.config.hypervisor.vcpus, opts.config.hypervisor.memory_mib,
                                            Deadline(opts.config.agent.boot_timeout)));
      timer.Done("daemon GetVM (" + handed.source() + ")");
      if (opts.verbose)
        std::fprintf(stderr, "vmfactory: source: daemon at %s, %s\n", sock.c_str(), handed.source().c_str());
      VMF_ASSIGN_OR_RETURN(auto vm, VM::Attach(VMHandle::FromProto(handed), opts.config));
      vm->KillOnCancel(cancel);
      timer.Done("attach");
      return vm;
    }
    // 2. The template, when there is one. A bad template is an error rather
    //    than a silent cold boot, so that it gets fixed.
    auto t = NewTemplateFactory(opts.config, opts.template_root);
    if (t.ok()) {
      if (opts.verbose)
        std::fprintf(stderr, "vmfactory: source: template at %s\n", opts.template_root.c_str());
      VMF_ASSIGN_OR_RETURN(Acquired got, (*t)->GetVM(opts.config, steps, cancel));
      return std::move(got.vm);
    }
    // NOT_FOUND is "no template here"; anything else is a broken one.
    if (t.status().code() != Code::kNotFound) {
      return t.status().WithContext(
          "the template is not usable (recreate it with `vmfactory init --force`, or use --cold)");
    }
  }
  // 3. A cold boot.
  if (opts.verbose) std::fprintf(stderr, "vmfactory: source: cold boot\n");
  VMF_ASSIGN_OR_RETURN(Acquired got, NewDirectFactory(opts.config)->GetVM(opts.config, steps, cancel));
  return std::move(got.vm);
}

int RunCommand(const RunOptions& opts, CancelToken* cancel, const int* signal_seen) {
  auto start = Clock::now();
  StepTimes steps;
  auto created = AcquireVM(opts, &steps, cancel);
  auto interrupted_status = [&]() { return *signal_seen ? 128 + *signal_seen : 0; };
  if (!created.ok()) {
    if (int s = interrupted_status()) {
      std::fprintf(stderr, "vmfactory: interrupted\n");
      return s;
    }
    std::fprintf(stderr, "vmfactory: cannot start a VM: %s\n", created.status().ToString().c_str());
    return 125;
  }
  std::unique_ptr<VM> vm = std::move(created).value();
  if (int s = interrupted_status()) {
    std::fprintf(stderr, "vmfactory: interrupted; the VM was stopped\n");
    return s;  // vm stops as it goes out of scope
  }
  if (opts.verbose) {
    for (const auto& [name, d] : steps) PrintStep(name, d);
  }

  auto exec_at = Clock::now();
  ExecSpec spec;
  spec.exec_id = kExecId;
  spec.args = opts.command;
  Status st = vm->agent().ExecProcess(spec);
  if (!st.ok()) {
    std::fprintf(stderr, "vmfactory: %s: %s\n", opts.command[0].c_str(), st.message().c_str());
    return st.code() == Code::kNotFound ? 127 : 126;
  }
  std::atomic<bool> first_output{false};
  Clock::time_point first_at{};
  std::atomic<bool> stop_stdin{false};
  std::thread out([&] { Pump(&vm->agent(), false, 1, &first_output, &first_at); });
  std::thread err([&] { Pump(&vm->agent(), true, 2, &first_output, &first_at); });
  std::thread in([&] { ForwardStdin(&vm->agent(), &stop_stdin); });

  Deadline deadline = opts.timeout_s > 0 ? Deadline(std::chrono::seconds(opts.timeout_s)) : kForever();
  auto waited = vm->agent().WaitProcess(kExecId, deadline);
  bool timed_out = !waited.ok() && waited.status().code() == Code::kDeadlineExceeded;
  // Before anything is killed on purpose: which process died, if one did.
  const Status lost = waited.ok() ? OkStatus() : vm->WithCauses(waited.status());
  if (!waited.ok()) cancel->Cancel();  // kills QEMU: the pumps see the channel close
  stop_stdin = true;
  out.join();
  err.join();
  in.join();
  auto done_at = Clock::now();
  vm->Stop();

  if (opts.verbose) {
    if (first_output) {
      PrintStep("exec to first output", std::chrono::duration_cast<Duration>(first_at - exec_at));
    }
    PrintStep("exec to exit", std::chrono::duration_cast<Duration>(done_at - exec_at));
    PrintStep("stop", std::chrono::duration_cast<Duration>(Clock::now() - done_at));
    PrintStep("total", std::chrono::duration_cast<Duration>(Clock::now() - start));
  }
  if (int s = interrupted_status()) {
    std::fprintf(stderr, "vmfactory: interrupted; the VM was stopped\n");
    return s;
  }
  if (timed_out) {
    std::fprintf(stderr, "vmfactory: timed out after %d s; the VM was stopped\n", opts.timeout_s);
    return 124;
  }
  if (!waited.ok()) {
    std::fprintf(stderr, "vmfactory: lost the command: %s\n", lost.ToString().c_str());
    return 125;
  }
  return *waited;
}

}  // namespace vmf
