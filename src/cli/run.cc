#include "cli/run.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "common/io.h"
#include "container/guest_container.h"
#include "daemon/acquire.h"
#include "vm/vm.h"

namespace vmf {
namespace {

constexpr const char* kExecId = "run";
const Deadline kForever() { return Deadline(std::chrono::hours(24 * 365)); }

void PrintStep(const std::string& name, Duration d) {
  std::fprintf(stderr, "vmfactory: %-26s %7lld ms\n", name.c_str(), static_cast<long long>(d.count()));
}

// Copies one output stream of the guest process to a host fd until EOF.
void Pump(AgentClient* agent, const ProcId& proc, bool stderr_stream, int out_fd,
          std::atomic<bool>* first_output, Clock::time_point* first_at) {
  for (;;) {
    auto data = stderr_stream ? agent->ReadStderr(proc, kForever()) : agent->ReadStdout(proc, kForever());
    if (!data.ok() || data->empty()) return;
    if (!first_output->exchange(true)) *first_at = Clock::now();
    (void)WriteAll(out_fd, *data, kForever());
  }
}

// Forwards our stdin to the guest process until EOF or until stop is set.
void ForwardStdin(AgentClient* agent, const ProcId& proc, const std::atomic<bool>* stop) {
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
      auto wrote = agent->WriteStdin(proc, chunk);
      if (!wrote.ok()) return;
      chunk.erase(0, *wrote);
      if (!chunk.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  (void)agent->CloseStdin(proc);
}

// The command as an OCI container in `rootfs` (a directory tree): the same
// disk and guest container as the containerd shim makes.
Result<std::unique_ptr<container::GuestContainer>> StartInRootfs(VM* vm, const RunOptions& opts,
                                                                 StepTimes* steps) {
  grpc::Spec spec;
  auto* p = spec.mutable_process();
  for (const auto& a : opts.command) p->add_args(a);
  p->add_env(std::string("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  p->add_env("HOME=/root");
  p->set_cwd("/");
  spec.set_hostname(vm->id().substr(0, 12));
  container::ContainerTimes times;
  VMF_ASSIGN_OR_RETURN(auto c,
                       container::GuestContainer::Create(vm, kExecId, opts.rootfs, spec, 256, &times));
  steps->emplace_back("rootfs image", Duration(times.image_ms));
  steps->emplace_back("disk hot-add", Duration(times.disk_ms));
  steps->emplace_back("container create", Duration(times.create_ms));
  VMF_RETURN_IF_ERROR(c->Start());
  return c;
}

}  // namespace

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
  ProcId proc(kExecId);
  std::unique_ptr<container::GuestContainer> in_rootfs;
  Status st;
  if (!opts.rootfs.empty()) {
    StepTimes container_steps;
    auto c = StartInRootfs(vm.get(), opts, &container_steps);
    if (opts.verbose) {
      for (const auto& [name, d] : container_steps) PrintStep(name, d);
    }
    if (c.ok()) {
      in_rootfs = std::move(*c);
      proc = in_rootfs->init();
    }
    st = c.status();
  } else {
    ExecSpec spec;
    spec.exec_id = kExecId;
    spec.args = opts.command;
    st = vm->agent().ExecProcess(spec);
  }
  if (!st.ok()) {
    std::fprintf(stderr, "vmfactory: %s: %s\n", opts.command[0].c_str(), st.message().c_str());
    return st.code() == Code::kNotFound ? 127 : 126;
  }
  std::atomic<bool> first_output{false};
  Clock::time_point first_at{};
  std::atomic<bool> stop_stdin{false};
  std::thread out([&] { Pump(&vm->agent(), proc, false, 1, &first_output, &first_at); });
  std::thread err([&] { Pump(&vm->agent(), proc, true, 2, &first_output, &first_at); });
  std::thread in([&] { ForwardStdin(&vm->agent(), proc, &stop_stdin); });

  Deadline deadline = opts.timeout_s > 0 ? Deadline(std::chrono::seconds(opts.timeout_s)) : kForever();
  auto waited = vm->agent().WaitProcess(proc, deadline);
  bool timed_out = !waited.ok() && waited.status().code() == Code::kDeadlineExceeded;
  // Before anything is killed on purpose: which process died, if one did.
  const Status lost = waited.ok() ? OkStatus() : vm->WithCauses(waited.status());
  if (!waited.ok()) cancel->Cancel();  // kills QEMU: the pumps see the channel close
  stop_stdin = true;
  out.join();
  err.join();
  in.join();
  auto done_at = Clock::now();
  in_rootfs.reset();
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
