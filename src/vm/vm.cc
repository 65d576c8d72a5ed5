#include "vm/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <thread>

#include "common/census.h"
#include "common/failpoint.h"
#include "common/io.h"
#include "common/log.h"

namespace vmf {
namespace fs = std::filesystem;
namespace {

Status FillRandom(std::string* buf) {
  size_t got = 0;
  while (got < buf->size()) {
    ssize_t n = ::getrandom(buf->data() + got, buf->size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom");
    }
    got += static_cast<size_t>(n);
  }
  return OkStatus();
}

}  // namespace

std::string NewVmId() {
  std::string raw(16, '\0');
  if (!FillRandom(&raw).ok()) std::abort();  // getrandom cannot fail for 16 bytes on Linux >= 3.17
  static const char* hex = "0123456789abcdef";
  std::string id;
  for (unsigned char c : raw) {
    id.push_back(hex[c >> 4]);
    id.push_back(hex[c & 15]);
  }
  return id;
}

Status ValidateId(const std::string& what, const std::string& id) {
  if (id.empty()) return InvalidArgument(what + " is empty");
  if (id.size() > 64)
    return InvalidArgument(what + " '" + id.substr(0, 64) + "...' is longer than 64 characters");
  if (id[0] == '.' || id[0] == '-')
    return InvalidArgument(what + " '" + id + "' must not start with '.' or '-'");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok)
      return InvalidArgument(what + " '" + id + "' may only contain letters, digits, '_', '-' and '.'");
  }
  return OkStatus();
}

VM::VM(VMConfig config, std::string id)
    : config_(std::move(config)),
      id_(std::move(id)),
      log_(VmLogger(id_)),
      cpus_(config_.hypervisor.vcpus),
      memory_mib_(config_.hypervisor.memory_mib) {}

VM::~VM() { (void)Stop(); }

Result<std::unique_ptr<VM>> VM::Create(const VMConfig& cfg, StepTimes* times, CancelToken* cancel) {
  VMConfig config = cfg;
  if (config.runtime_dir.empty()) config.runtime_dir = DefaultRuntimeDir();
  VMF_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<VM> vm(new VM(config, NewVmId()));
  vm->log_->info("creating VM: {} vCPUs, {} MiB{}", vm->cpus_, vm->memory_mib_,
                 config.hypervisor.boot_from_template ? ", from template" : "");
  Deadline deadline(config.agent.boot_timeout);
  StepTimer timer(times);

  // 1. The VM's private runtime dir: sockets, logs.
  VMF_ASSIGN_OR_RETURN(vm->dir_, ScopedDir::Create(config.runtime_dir + "/vm/" + vm->id_, 0700));

  // 2. QEMU: the guest starts booting (a clone waits for its state).
  vm->hypervisor_ = NewQemuHypervisor(vm->id_, config.hypervisor, vm->dir_.path());
  VMF_RETURN_IF_ERROR(vm->Explain(vm->hypervisor_->Start(deadline)));
  timer.Done("qemu start");
  vm->KillOnCancel(cancel);
  auto cancelled = [&] {
    return cancel && cancel->cancelled() ? Cancelled("VM creation was cancelled") : OkStatus();
  };
  VMF_RETURN_IF_ERROR(cancelled());

  // 3. The proxy, while the guest boots: it owns the agent channel.
  VMF_RETURN_IF_ERROR(vm->Explain(vm->StartProxy(deadline)));
  timer.Done("proxy start");
  VMF_RETURN_IF_ERROR(cancelled());

  // 4. Our own connection to the agent, through the proxy.
  VMF_ASSIGN_OR_RETURN(vm->agent_,
                       AgentClient::Connect(vm->proxy_socket(), config.agent.call_timeout, deadline));

  // 5. Wait for the agent. A clone is paused until Start(): not checked here.
  if (!config.hypervisor.boot_from_template) {
    vm->FailPoint(failpoint::kVmBoot);
    Status ready = vm->agent_->WaitReady(deadline);
    VMF_RETURN_IF_ERROR(cancelled());
    VMF_RETURN_IF_ERROR(vm->Explain(ready));
    timer.Done("guest boot + agent ready");
  }
  vm->log_->info("VM ready: qemu pid {}, proxy pid {}", vm->qemu_pid(), vm->proxy_pid());
  return vm;
}

void VM::KillOnCancel(CancelToken* cancel) {
  if (!cancel || cancel_) return;
  // Killing QEMU (not yet reaped, so its pid cannot be reused) closes the
  // agent channel: the proxy exits and every pending agent call fails at once.
  cancel_ = cancel;
  cancel_handle_ = cancel->OnCancel([pid = qemu_pid()] { ::kill(pid, SIGKILL); });
}

VMHandle VM::handle() const {
  VMHandle h;
  h.id = id_;
  h.runtime_dir = dir_.path();
  h.qmp_socket = hypervisor_ ? hypervisor_->qmp_socket() : "";
  h.proxy_url = proxy_url();
  h.qemu_pid = qemu_pid();
  h.proxy_pid = proxy_pid();
  h.cpus = cpus_;
  h.memory_mib = memory_mib_;
  return h;
}

void VM::FailPoint(std::string_view point) const {
  failpoint::Hit(point, {.vm_id = id_, .qemu_pid = qemu_pid(), .proxy_pid = proxy_.pid()});
}

VMHandle VM::Release() {
  VMHandle h = handle();
  log_->info("handing over (qemu pid {}, proxy pid {})", h.qemu_pid, h.proxy_pid);
  if (cancel_) cancel_->Remove(cancel_handle_);
  cancel_ = nullptr;
  if (agent_) agent_->Close();
  agent_.reset();
  if (hypervisor_) hypervisor_->Release();
  hypervisor_.reset();
  proxy_.Release();
  dir_.Release();
  sandbox_link_.clear();
  return h;
}

Status CheckVmDir(const std::string& dir, const std::string& id) {
  const fs::path p(dir);
  if (!p.is_absolute() || p.lexically_normal() != p || p.filename() != id ||
      p.parent_path().filename() != "vm") {
    return InvalidArgument("VM runtime dir '" + dir + "' is not an absolute, normal path ending in vm/" + id);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "VM runtime dir " + dir);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument("VM runtime dir " + dir + " is not a directory");
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return PermissionDenied("VM runtime dir " + dir + " is not private to us (owner and mode 0700)");
  }
  return OkStatus();
}

Result<std::unique_ptr<VM>> VM::Attach(const VMHandle& h, const VMConfig& cfg) {
  VMConfig config = cfg;
  config.hypervisor.vcpus = h.cpus;
  config.hypervisor.memory_mib = h.memory_mib;
  // A handle comes from another process: nothing in it is trusted until
  // checked, since Stop() removes its dir and kills its processes.
  VMF_RETURN_IF_ERROR(ValidateId("VM id", h.id));
  VMF_RETURN_IF_ERROR(CheckVmDir(h.runtime_dir, h.id));
  auto stop_what_is_there = [&] { StopProcessesMentioning(h.runtime_dir, std::chrono::milliseconds(500)); };
  if (!ProcessMentions(h.qemu_pid, h.runtime_dir)) {
    return FailedPrecondition("attach VM " + h.id + ": pid " + std::to_string(h.qemu_pid) +
                              " is not its QEMU (gone, or another process)");
  }
  if (!ProcessMentions(h.proxy_pid, h.runtime_dir)) {
    return FailedPrecondition("attach VM " + h.id + ": pid " + std::to_string(h.proxy_pid) +
                              " is not its agent proxy (gone, or another process)");
  }
  std::unique_ptr<VM> vm(new VM(config, h.id));
  Deadline deadline(std::chrono::seconds(10));
  // Adopt first, so that a failure below still stops what we were given.
  vm->dir_ = ScopedDir::Adopt(h.runtime_dir);
  vm->proxy_ = ChildProcess::Adopt(h.proxy_pid);
  vm->restored_ = true;
  auto hyp = AttachQemuHypervisor(h.id, config.hypervisor, h.runtime_dir, h.qemu_pid, deadline);
  if (!hyp.ok()) {
    // It is ours now, and unusable: stop it rather than leak it.
    stop_what_is_there();
    return hyp.status().WithContext("attach VM " + h.id);
  }
  vm->hypervisor_ = std::move(*hyp);
  VMF_ASSIGN_OR_RETURN(vm->agent_,
                       AgentClient::Connect(vm->proxy_socket(), config.agent.call_timeout, deadline));
  vm->log_->info("attached (qemu pid {}, proxy pid {})", h.qemu_pid, h.proxy_pid);
  return vm;
}

Status VM::StartProxy(const Deadline& deadline) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd ready_r(p[0]);
  UniqueFd ready_w(p[1]);
  UniqueFd log(::open(console_log().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return ErrnoStatus(errno, "create " + console_log());
  auto left = std::chrono::duration_cast<Duration>(deadline.when() - Clock::now());
  std::vector<std::string> argv = {config_.proxy.path,
                                   "--vm-id",
                                   id_,
                                   "--agent-socket",
                                   hypervisor_->agent_socket(),
                                   "--console-socket",
                                   hypervisor_->console_socket(),
                                   "--listen",
                                   proxy_socket(),
                                   "--log-file",
                                   console_log(),
                                   "--ready-fd",
                                   "3",
                                   "--connect-timeout-ms",
                                   std::to_string(std::max<long long>(left.count(), 1000))};
  SpawnOptions opts;
  opts.stderr_fd = log.get();
  opts.pass_fds = {ready_w.get()};
  VMF_ASSIGN_OR_RETURN(proxy_, ChildProcess::Spawn(argv, opts));
  ready_w.reset();
  std::string line;
  Status st =
      ReadExact(ready_r.get(), 6, &line, Deadline(std::min<Duration>(left, std::chrono::seconds(10))));
  if (!st.ok() || line != "ready\n") {
    return Unavailable("proxy did not start: " + (st.ok() ? "bad ready line" : st.message()) +
                       "; log: " + TailOfFile(console_log(), 1024));
  }
  return OkStatus();
}

Status VM::Diagnose(const Status& st) {
  if (st.ok()) return st;
  auto qemu_gone = [&] { return hypervisor_ && hypervisor_->pid() > 0 && !hypervisor_->Running(); };
  auto proxy_gone = [&] { return proxy_.valid() && proxy_.Poll().has_value(); };
  // A killed process's sockets close a moment before it can be reaped.
  if (st.code() == Code::kUnavailable) {
    for (int i = 0; i < 20 && !qemu_gone() && !proxy_gone(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::string gone;
  if (hypervisor_ && hypervisor_->pid() > 0 && !hypervisor_->Running()) {
    gone += "; QEMU (pid " + std::to_string(hypervisor_->pid()) + ") is no longer running";
  }
  if (proxy_.valid()) {
    if (auto ps = proxy_.Poll()) {
      gone += "; the agent proxy (pid " + std::to_string(proxy_.pid()) + ") exited (" +
              DescribeWaitStatus(*ps) + ")";
    }
  }
  return {st.code(), st.message() + gone};
}

Status VM::Explain(const Status& status) {
  if (status.ok()) return status;
  Status st = Diagnose(status);
  std::string extra;
  if (hypervisor_ && hypervisor_->pid() > 0) {
    std::string q = hypervisor_->ErrorOutput();
    if (q != "(no output)") extra += "; QEMU said: " + q;
  }
  if (dir_.valid()) {
    std::string c = TailOfFile(console_log(), 1024);
    if (!c.empty()) extra += "; last console/proxy log lines:\n" + c;
  }
  return {st.code(), st.message() + extra};
}

Status VM::Pause() {
  log_->info("pause");
  return Diagnose(hypervisor_->Pause());
}

Status VM::Save() {
  log_->info("save device state to {}", config_.hypervisor.device_state_path);
  if (config_.hypervisor.device_state_path.empty()) {
    return FailedPrecondition("save: the VM was not configured with a device state path");
  }
  return Diagnose(hypervisor_->Save(Deadline(std::chrono::seconds(60))));
}

Status VM::Resume() {
  log_->info("resume");
  return Diagnose(hypervisor_->Resume());
}

Status VM::Start() {
  log_->info("start");
  if (!hypervisor_ || !hypervisor_->Running()) return FailedPrecondition("start: QEMU is not running");
  if (config_.hypervisor.boot_from_template && !restored_) {
    FailPoint(failpoint::kVmRestore);
    VMF_RETURN_IF_ERROR(Explain(hypervisor_->RestoreState(Deadline(std::chrono::seconds(30)))));
    restored_ = true;
  }
  return Diagnose(hypervisor_->Resume());
}

Status VM::Disconnect() {
  log_->info("disconnect agent and proxy");
  if (agent_) agent_->Close();
  agent_.reset();
  proxy_.Stop(std::chrono::milliseconds(1000));
  return OkStatus();
}

Status VM::Stop() {
  if (cancel_) cancel_->Remove(cancel_handle_);
  cancel_ = nullptr;
  if (!dir_.valid() && !hypervisor_ && !proxy_.valid()) return OkStatus();
  log_->info("stop");
  (void)Disconnect();
  if (hypervisor_) (void)hypervisor_->Stop();
  hypervisor_.reset();
  if (!sandbox_link_.empty()) ::unlink(sandbox_link_.c_str());
  sandbox_link_.clear();
  dir_.Remove();
  return OkStatus();
}

Status VM::AddCPUs(uint32_t count) {
  if (count == 0) return OkStatus();
  log_->info("hot-add {} vCPUs", count);
  FailPoint(failpoint::kVmHotplug);
  VMF_RETURN_IF_ERROR(Diagnose(hypervisor_->AddCPUs(count)));
  cpus_ += count;
  cpu_delta_ += count;
  return OkStatus();
}

Status VM::AddMemory(uint32_t mib) {
  if (mib == 0) return OkStatus();
  // The guest onlines memory in whole blocks (128 MiB on x86-64).
  uint32_t block_mib = 128;
  if (agent_) {
    auto details = agent_->GetGuestDetails();
    if (details.ok() && details->mem_block_size_bytes() >= (1u << 20)) {
      block_mib = static_cast<uint32_t>(details->mem_block_size_bytes() >> 20);
    }
  }
  uint32_t size = (mib + block_mib - 1) / block_mib * block_mib;
  if (memory_mib_ + size > config_.hypervisor.max_memory_mib) {
    return ResourceExhausted("cannot add " + std::to_string(size) + " MiB: the VM has " +
                             std::to_string(memory_mib_) + " MiB of at most " +
                             std::to_string(config_.hypervisor.max_memory_mib));
  }
  log_->info("hot-add {} MiB of memory", size);
  FailPoint(failpoint::kVmHotplug);
  VMF_RETURN_IF_ERROR(Diagnose(hypervisor_->AddMemory(size)));
  memory_mib_ += size;
  return OkStatus();
}

Result<bool> VM::GrowTo(uint32_t cpus, uint32_t memory_mib) {
  uint32_t add_cpus = cpus > cpus_ ? cpus - cpus_ : 0;
  uint32_t add_mem = memory_mib > memory_mib_ ? memory_mib - memory_mib_ : 0;
  if (add_cpus == 0 && add_mem == 0) return false;
  VMF_RETURN_IF_ERROR(AddCPUs(add_cpus));
  VMF_RETURN_IF_ERROR(AddMemory(add_mem));
  VMF_RETURN_IF_ERROR(OnlineCPUMemory());
  return true;
}

Status VM::OnlineCPUMemory() {
  if (!agent_) return FailedPrecondition("online CPU/memory: the agent is disconnected");
  log_->info("online {} vCPUs and memory", cpu_delta_);
  VMF_RETURN_IF_ERROR(Diagnose(agent_->OnlineCPUMem(cpu_delta_, false)));
  cpu_delta_ = 0;
  return OkStatus();
}

Status VM::ReseedRNG() {
  if (!agent_) return FailedPrecondition("reseed: the agent is disconnected");
  log_->info("reseed the guest RNG");
  std::string data(512, '\0');
  VMF_RETURN_IF_ERROR(FillRandom(&data));
  return Diagnose(agent_->ReseedRandomDev(data));
}

Status VM::SyncClock() {
  if (!agent_) return FailedPrecondition("set clock: the agent is disconnected");
  timeval tv{};
  ::gettimeofday(&tv, nullptr);
  return Diagnose(agent_->SetGuestDateTime(tv.tv_sec, tv.tv_usec));
}

Status VM::AssignSandbox(const std::string& sandbox_id) {
  VMF_RETURN_IF_ERROR(ValidateId("sandbox id", sandbox_id));
  if (!dir_.valid()) return FailedPrecondition("assign sandbox: the VM is stopped");
  std::string sb_dir = config_.runtime_dir + "/sandbox";
  VMF_RETURN_IF_ERROR(MakeDirs(sb_dir));
  std::string link = sb_dir + "/" + sandbox_id;
  log_->info("assign to sandbox {}", sandbox_id);
  // Replace what a previous sandbox of that id left, but never a directory
  // we do not own: only an old link may be removed.
  struct stat st {};
  if (::lstat(link.c_str(), &st) == 0) {
    if (!S_ISLNK(st.st_mode)) return AlreadyExists("sandbox path " + link + " exists and is not a link");
    ::unlink(link.c_str());
  }
  if (::symlink(dir_.path().c_str(), link.c_str()) != 0) return ErrnoStatus(errno, "symlink " + link);
  if (!sandbox_link_.empty() && sandbox_link_ != link) ::unlink(sandbox_link_.c_str());
  sandbox_link_ = link;
  return OkStatus();
}

}  // namespace vmf
