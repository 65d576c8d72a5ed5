#include "vm/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <filesystem>
#include <thread>

#include "common/census.h"
#include "common/failpoint.h"
#include "common/io.h"
#include "common/log.h"
#include "hypervisor/backends.h"

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


namespace {

// The parts a VM is made with: the given ones, the defaults for the rest.
Result<VmDeps> Resolve(const VmDeps& deps, const VMConfig& config) {
  VmDeps d = deps;
  if (!d.backend) {
    VMF_ASSIGN_OR_RETURN(d.backend, BackendNamed(config.hypervisor.backend));
  }
  if (!d.proxy) d.proxy = &ProcessProxyLauncher();
  return d;
}

}  // namespace

VM::VM(VMConfig config, std::string id, const VmDeps& deps)
    : config_(std::move(config)),
      deps_(deps),
      id_(std::move(id)),
      log_(VmLogger(id_)),
      cpus_(config_.hypervisor.vcpus),
      memory_mib_(config_.hypervisor.memory_mib) {}

VM::~VM() { Stop(); }

Result<std::unique_ptr<VM>> VM::Create(const VMConfig& cfg, StepTimes* times, CancelToken* cancel,
                                       const VmDeps& given) {
  VMConfig config = cfg;
  if (config.runtime_dir.empty()) config.runtime_dir = DefaultRuntimeDir();
  VMF_ASSIGN_OR_RETURN(const VmDeps deps, Resolve(given, config));
  VMF_RETURN_IF_ERROR(config.Validate(deps.backend));
  std::unique_ptr<VM> vm(new VM(config, NewVmId(), deps));
  const bool clone = config.hypervisor.boot == BootMode::kClone;
  vm->log_->info("creating VM: {} vCPUs, {} MiB{}", vm->cpus_, vm->memory_mib_,
                 clone ? ", from template" : "");
  Deadline deadline(config.agent.boot_timeout);
  StepTimer timer(times);
  auto cancelled = [&] {
    return cancel && cancel->cancelled() ? Cancelled("VM creation was cancelled") : OkStatus();
  };

  // 1. The VM's private runtime dir: sockets, logs.
  VMF_ASSIGN_OR_RETURN(vm->dir_, ScopedDir::Create(config.runtime_dir + "/vm/" + vm->id_, 0700));

  // 2. Its identity and confinement: a uid of its own, a jail, seccomp.
  VMF_RETURN_IF_ERROR(vm->Confine());

  // 3. Its cgroup, which QEMU and the proxy join before they exec: memory,
  //    CPU and task limits. A host without usable cgroups runs it without
  //    (unless limits are required).
  if (config.limits.enabled) {
    auto cg = VmCgroup::Create(vm->id_, vm->LimitsFor(vm->cpus_, vm->memory_mib_));
    if (cg.ok()) {
      vm->UseCgroup(std::move(*cg));
    } else if (cg.status().code() != Code::kUnavailable || config.limits.required) {
      return cg.status().WithContext("resource limits (limits.required = " +
                                     std::string(config.limits.required ? "true" : "false") + ")");
    } else {
      vm->limits_state_ = "not applied: " + cg.status().message();
      vm->log_->warn("resource limits not applied: {}", cg.status().message());
    }
  }

  // 4. The VM process: the guest starts booting (a clone waits for its state).
  HypervisorConfig hypervisor = vm->config_.hypervisor;
  hypervisor.cgroup_procs_fds = vm->cgroup_.procs_fds();
  VMF_ASSIGN_OR_RETURN(vm->hypervisor_, deps.backend->Create(vm->id_, hypervisor, vm->dir_.path()));
  VMF_RETURN_IF_ERROR(vm->WithCausesAndLogs(vm->hypervisor_->Start(deadline)));
  timer.Done("qemu start");
  vm->KillOnCancel(cancel);
  VMF_RETURN_IF_ERROR(cancelled());

  // 5. The proxy, while the guest boots: it owns the agent channel.
  auto proxy = deps.proxy->Launch(vm->ProxyRequestFor(), deadline);
  if (!proxy.ok()) return vm->WithCausesAndLogs(proxy.status());
  vm->proxy_ = std::move(*proxy);
  timer.Done("proxy start");
  VMF_RETURN_IF_ERROR(cancelled());

  // 6. Our own connection to the agent, through the proxy.
  VMF_ASSIGN_OR_RETURN(vm->agent_,
                       AgentClient::Connect(vm->proxy_url(), config.agent.call_timeout, deadline));

  // 7. Wait for the agent. A clone is paused until Start(): not checked here.
  if (!clone) {
    vm->FailPoint(failpoint::kVmBoot);
    Status ready = vm->agent_->WaitReady(deadline);
    VMF_RETURN_IF_ERROR(cancelled());
    VMF_RETURN_IF_ERROR(vm->WithCausesAndLogs(ready));
    timer.Done("guest boot + agent ready");
  }
  vm->log_->info("VM ready: vmm pid {}, proxy pid {}", vm->vmm_pid(), vm->proxy_pid());
  return vm;
}

ProxyRequest VM::ProxyRequestFor() const {
  return {.vm_id = id_,
          .binary = config_.proxy.path,
          .dir = dir_.path(),
          .guest = hypervisor_->endpoints(),
          .confinement = config_.hypervisor.confinement,
          .cgroup_procs_fds = cgroup_.procs_fds()};
}

Status VM::Confine() {
  const SecurityConfig& sec = config_.security;
  VmConfinement& c = config_.hypervisor.confinement;
  c = VmConfinement{};
  c.readonly_open_lib = sec.readonly_open_lib;
  if (!sec.confine) return OkStatus();
  c.sandbox = true;
  if (::geteuid() != 0) return OkStatus();  // the VM runs as we do
  VMF_ASSIGN_OR_RETURN(
      uid_, UidLease::Acquire(UidLeaseDir(config_.runtime_dir), sec.uid_first, sec.uid_count, dir_.path()));
  if (::chown(dir_.path().c_str(), uid_.uid(), uid_.gid()) != 0) {
    return ErrnoStatus(errno, "give VM dir " + dir_.path() + " to uid " + std::to_string(uid_.uid()));
  }
  c.change_ids = true;
  c.uid = uid_.uid();
  c.gid = uid_.gid();
  c.jail = true;
  log_->info("confined: uid {}", c.uid);
  return OkStatus();
}

void VM::UseCgroup(VmCgroup cgroup) {
  cgroup_ = std::move(cgroup);
  limits_state_ = "applied (" + cgroup_.Describe() + ")";
}

CgroupLimits VM::LimitsFor(uint32_t cpus, uint32_t memory_mib) const {
  // Memory: the guest's RAM (QEMU touches all of it in time) plus QEMU's
  // own (device emulation, TCG's code cache, the proxy), no swap. CPU: a
  // core per vCPU thread, plus one for QEMU's main loop and I/O threads
  // and the proxy, so that emulation does not eat into the guest's share.
  return {.memory_bytes = (uint64_t{memory_mib} + config_.limits.memory_overhead_mib) << 20,
          .cpus = static_cast<double>(cpus) + 1,
          .pids = config_.limits.pids_max};
}

Status VM::UpdateLimits(uint32_t cpus, uint32_t memory_mib) {
  if (!cgroup_.valid()) return OkStatus();
  return cgroup_.SetLimits(LimitsFor(cpus, memory_mib)).WithContext("resource limits");
}

void VM::KillOnCancel(CancelToken* cancel) {
  if (!cancel || kill_on_cancel_.active()) return;
  // Killing the VM process (not yet reaped, so its pid cannot be reused)
  // closes the agent channel: the proxy exits and every pending agent call
  // fails at once.
  kill_on_cancel_ = ScopedCancelAction(cancel, [pid = vmm_pid()] {
    if (pid > 0) ::kill(pid, SIGKILL);
  });
}

VMHandle VM::handle() const {
  VMHandle h;
  h.id = id_;
  h.runtime_dir = dir_.path();
  h.backend = std::string(deps_.backend->name());
  h.control_endpoint = hypervisor_ ? hypervisor_->control_endpoint() : "";
  h.proxy_url = proxy_url();
  h.vmm_pid = vmm_pid();
  h.proxy_pid = proxy_pid();
  h.cpus = cpus_;
  h.memory_mib = memory_mib_;
  h.uid = uid_.valid() ? uid_.uid() : 0;
  h.cgroup_dirs = cgroup_.dirs();
  return h;
}

void VM::FailPoint(std::string_view point) const {
  failpoint::Hit(point, {.vm_id = id_, .vmm_pid = vmm_pid(), .proxy_pid = proxy_pid()});
}

VMHandle VM::Release() {
  VMHandle h = handle();
  log_->info("handing over (vmm pid {}, proxy pid {})", h.vmm_pid, h.proxy_pid);
  kill_on_cancel_.Reset();
  if (agent_) agent_->Close();
  agent_.reset();
  if (hypervisor_) hypervisor_->Release();
  hypervisor_.reset();
  if (proxy_) proxy_->Release();
  proxy_.reset();
  dir_.Release();
  uid_.Detach();
  cgroup_.Release();
  sandbox_link_.Release();
  return h;
}

Status CheckVmDir(const std::string& dir, const std::string& id, uint32_t vm_uid) {
  const fs::path p(dir);
  if (!p.is_absolute() || p.lexically_normal() != p || p.filename() != id ||
      p.parent_path().filename() != "vm") {
    return InvalidArgument("VM runtime dir '" + dir + "' is not an absolute, normal path ending in vm/" + id);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "VM runtime dir " + dir);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument("VM runtime dir " + dir + " is not a directory");
  const bool owner_ok = st.st_uid == ::geteuid() || (vm_uid != 0 && st.st_uid == vm_uid);
  if (!owner_ok || (st.st_mode & 077) != 0) {
    return PermissionDenied("VM runtime dir " + dir +
                            " is not private to us or to the VM (owner and mode 0700)");
  }
  return OkStatus();
}

Result<std::unique_ptr<VM>> VM::Attach(const VMHandle& h, const VMConfig& cfg, const VmDeps& given) {
  VMConfig config = cfg;
  config.hypervisor.vcpus = h.cpus;
  config.hypervisor.memory_mib = h.memory_mib;
  if (!h.backend.empty()) config.hypervisor.backend = h.backend;
  VMF_ASSIGN_OR_RETURN(const VmDeps deps, Resolve(given, config));
  // A handle comes from another process: nothing in it is trusted until
  // checked, since Stop() removes its dir and kills its processes.
  VMF_RETURN_IF_ERROR(ValidateId("VM id", h.id));
  VMF_RETURN_IF_ERROR(CheckVmDir(h.runtime_dir, h.id, h.uid));
  UidLease lease;
  if (h.uid != 0) {
    // The lease lives beside the VM dir's parent (RUNTIME/vm/ID -> RUNTIME/uids).
    const std::string runtime = fs::path(h.runtime_dir).parent_path().parent_path().string();
    VMF_ASSIGN_OR_RETURN(lease, UidLease::Adopt(UidLeaseDir(runtime), h.uid, h.runtime_dir));
  }
  if (!ProcessMentions(h.vmm_pid, h.runtime_dir)) {
    return FailedPrecondition("attach VM " + h.id + ": pid " + std::to_string(h.vmm_pid) +
                              " is not its VM process (gone, or another process)");
  }
  if (!ProcessMentions(h.proxy_pid, h.runtime_dir)) {
    return FailedPrecondition("attach VM " + h.id + ": pid " + std::to_string(h.proxy_pid) +
                              " is not its agent proxy (gone, or another process)");
  }
  // Its cgroup dirs are removed at Stop(): checked like the rest.
  VmCgroup cgroup;
  if (!h.cgroup_dirs.empty()) {
    auto cg = VmCgroup::Adopt(h.id, h.cgroup_dirs);
    if (!cg.ok() && cg.status().code() == Code::kInvalidArgument) {
      return cg.status().WithContext("attach VM " + h.id);
    }
    if (cg.ok()) cgroup = std::move(*cg);
  }
  std::unique_ptr<VM> vm(new VM(config, h.id, deps));
  Deadline deadline(std::chrono::seconds(10));
  if (cgroup.valid()) vm->UseCgroup(std::move(cgroup));
  // Adopt first, so that a failure below still stops what we were given.
  vm->dir_ = ScopedDir::Adopt(h.runtime_dir);
  vm->uid_ = std::move(lease);
  vm->restored_ = true;
  auto stop_what_is_there = [&] { StopProcessesMentioning(h.runtime_dir, std::chrono::milliseconds(500)); };
  auto hyp = deps.backend->Attach(h.id, config.hypervisor, h.runtime_dir, h.vmm_pid, deadline);
  if (!hyp.ok()) {
    // It is ours now, and unusable: stop it rather than leak it.
    stop_what_is_there();
    return hyp.status().WithContext("attach VM " + h.id);
  }
  vm->hypervisor_ = std::move(*hyp);
  VMF_ASSIGN_OR_RETURN(vm->proxy_, deps.proxy->Adopt(vm->ProxyRequestFor(), h.proxy_pid));
  VMF_ASSIGN_OR_RETURN(vm->agent_,
                       AgentClient::Connect(vm->proxy_url(), config.agent.call_timeout, deadline));
  vm->log_->info("attached (vmm pid {}, proxy pid {})", h.vmm_pid, h.proxy_pid);
  return vm;
}

void StopVmOf(const VMHandle& h, const VMConfig& config, const VmDeps& deps) {
  auto vm = VM::Attach(h, config, deps);
  if (vm.ok()) {
    (*vm)->Stop();
    return;
  }
  // Attach stops what it adopted when it fails; make sure of the rest.
  spdlog::warn("attach to VM {} failed ({}); stopping what is left of it", h.id, vm.status().ToString());
  RemoveVmRemains(h);
}

void RemoveVmRemains(const VMHandle& h) {
  if (CheckVmDir(h.runtime_dir, h.id, h.uid).ok()) {
    StopProcessesMentioning(h.runtime_dir, std::chrono::milliseconds(500));
    std::error_code ec;
    fs::remove_all(h.runtime_dir, ec);
    if (h.uid != 0) {
      // A lease whose dir is gone is stale anyway; this frees the uid at once.
      const std::string runtime = fs::path(h.runtime_dir).parent_path().parent_path().string();
      if (auto lease = UidLease::Adopt(UidLeaseDir(runtime), h.uid, h.runtime_dir); lease.ok())
        lease->Release();
    }
  }
  if (!h.cgroup_dirs.empty()) {
    // Adopting the dirs of a VM whose processes are gone removes them.
    auto cg = VmCgroup::Adopt(h.id, h.cgroup_dirs);
    if (!cg.ok()) spdlog::warn("cgroup of VM {}: {}", h.id, cg.status().ToString());
  }
}

Status VM::WithCauses(const Status& st) {
  if (st.ok()) return st;
  auto vmm_gone = [&] { return hypervisor_ && hypervisor_->pid() > 0 && !hypervisor_->Running(); };
  std::optional<std::string> proxy_end;
  auto proxy_gone = [&] {
    if (proxy_ && !proxy_end) proxy_end = proxy_->Exited();
    return proxy_end.has_value();
  };
  // A killed process's sockets close a moment before it can be reaped.
  if (st.code() == Code::kUnavailable) {
    for (int i = 0; i < 20 && !vmm_gone() && !proxy_gone(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::string gone;
  if (vmm_gone()) {
    gone += "; QEMU (pid " + std::to_string(hypervisor_->pid()) + ") is no longer running";
    if (auto why = cgroup_.LimitHit()) gone += ": " + *why;
  }
  if (proxy_gone()) {
    gone += "; the agent proxy (pid " + std::to_string(proxy_->pid()) + ") exited (" + *proxy_end + ")";
  }
  return {st.code(), st.message() + gone};
}

Status VM::WithCausesAndLogs(const Status& status) {
  if (status.ok()) return status;
  Status st = WithCauses(status);
  std::string extra;
  if (hypervisor_ && hypervisor_->pid() > 0) {
    if (auto said = hypervisor_->ErrorOutput()) extra += "; QEMU said: " + *said;
  }
  if (dir_.valid()) {
    std::string c = TailOfFile(ConsoleLogPath(dir_.path()), 1024);
    if (!c.empty()) extra += "; last console/proxy log lines:\n" + c;
  }
  return {st.code(), st.message() + extra};
}

Status VM::Pause() {
  log_->info("pause");
  return WithCauses(hypervisor_->Pause());
}

Status VM::Save() {
  log_->info("save device state to {}", config_.hypervisor.device_state_path);
  if (config_.hypervisor.device_state_path.empty()) {
    return FailedPrecondition("save: the VM was not configured with a device state path");
  }
  return WithCauses(hypervisor_->Save(Deadline(std::chrono::seconds(60))));
}

Status VM::Resume() {
  log_->info("resume");
  return WithCauses(hypervisor_->Resume());
}

Status VM::Start() {
  log_->info("start");
  if (!hypervisor_ || !hypervisor_->Running()) return FailedPrecondition("start: QEMU is not running");
  if (config_.hypervisor.boot == BootMode::kClone && !restored_) {
    FailPoint(failpoint::kVmRestore);
    VMF_RETURN_IF_ERROR(WithCausesAndLogs(hypervisor_->RestoreState(Deadline(std::chrono::seconds(30)))));
    restored_ = true;
  }
  return WithCauses(hypervisor_->Resume());
}

void VM::Disconnect() {
  log_->info("disconnect agent and proxy");
  if (agent_) agent_->Close();
  agent_.reset();
  if (proxy_) proxy_->Stop();
}

void VM::Stop() {
  kill_on_cancel_.Reset();
  if (!dir_.valid() && !hypervisor_ && !proxy_) return;
  log_->info("stop");
  Disconnect();
  proxy_.reset();
  if (hypervisor_) hypervisor_->Stop();
  hypervisor_.reset();
  cgroup_.Remove();
  sandbox_link_.Remove();
  dir_.Remove();
  uid_.Release();  // after its processes and files are gone
}

Status VM::AddCPUs(uint32_t count) {
  if (count == 0) return OkStatus();
  log_->info("hot-add {} vCPUs", count);
  FailPoint(failpoint::kVmHotplug);
  VMF_RETURN_IF_ERROR(UpdateLimits(cpus_ + count, memory_mib_));
  if (Status st = WithCauses(hypervisor_->AddCPUs(count)); !st.ok()) {
    (void)UpdateLimits(cpus_, memory_mib_);
    return st;
  }
  cpus_ += count;
  cpu_delta_ += count;
  return OkStatus();
}

uint32_t HotplugMemorySize(uint32_t mib, uint64_t block_bytes) {
  // The guest onlines memory in whole blocks (128 MiB on x86-64 when it
  // does not say).
  uint64_t block_mib = block_bytes >= (1u << 20) ? block_bytes >> 20 : 128;
  uint64_t size = (uint64_t{mib} + block_mib - 1) / block_mib * block_mib;
  return static_cast<uint32_t>(std::min<uint64_t>(size, UINT32_MAX));
}

Status VM::AddDisk(const std::string& serial, const std::string& path, bool read_only) {
  if (!hypervisor_) return FailedPrecondition("VM " + id_ + " is stopped");
  Status st = hypervisor_->AddDisk(serial, path, read_only);
  if (!st.ok()) return WithCauses(st);
  log_->info("added disk {} ({}{})", serial, path, read_only ? ", read-only" : "");
  return OkStatus();
}

Status VM::RemoveDisk(const std::string& serial) {
  if (!hypervisor_) return OkStatus();  // gone with its VM process
  Status st = hypervisor_->RemoveDisk(serial);
  if (!st.ok()) return WithCauses(st);
  log_->info("removed disk {}", serial);
  return OkStatus();
}

Status VM::AddMemory(uint32_t mib) {
  if (mib == 0) return OkStatus();
  uint64_t block_bytes = 0;
  if (agent_) {
    auto details = agent_->GetGuestDetails();
    if (details.ok()) block_bytes = details->mem_block_size_bytes();
  }
  uint32_t size = HotplugMemorySize(mib, block_bytes);
  if (uint64_t{memory_mib_} + size > config_.hypervisor.max_memory_mib) {
    return ResourceExhausted("cannot add " + std::to_string(size) + " MiB: the VM has " +
                             std::to_string(memory_mib_) + " MiB of at most " +
                             std::to_string(config_.hypervisor.max_memory_mib));
  }
  log_->info("hot-add {} MiB of memory", size);
  FailPoint(failpoint::kVmHotplug);
  // The limit grows first: the guest may use the new memory at once.
  VMF_RETURN_IF_ERROR(UpdateLimits(cpus_, memory_mib_ + size));
  if (Status st = WithCauses(hypervisor_->AddMemory(size)); !st.ok()) {
    (void)UpdateLimits(cpus_, memory_mib_);
    return st;
  }
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
  VMF_RETURN_IF_ERROR(WithCauses(agent_->OnlineCPUMem(cpu_delta_, false)));
  cpu_delta_ = 0;
  return OkStatus();
}

Result<std::string> VM::GenerationId() {
  if (!hypervisor_) return FailedPrecondition("generation id: the VM is stopped");
  auto id = hypervisor_->GenerationId();
  if (!id.ok()) return WithCauses(id.status());
  return id;
}

Status VM::ReseedRNG() {
  if (!agent_) return FailedPrecondition("reseed: the agent is disconnected");
  log_->info("reseed the guest RNG");
  std::string data(512, '\0');
  VMF_RETURN_IF_ERROR(FillRandom(&data));
  return WithCauses(agent_->ReseedRandomDev(data));
}

Status VM::SyncClock() {
  if (!agent_) return FailedPrecondition("set clock: the agent is disconnected");
  timeval tv{};
  ::gettimeofday(&tv, nullptr);
  return WithCauses(agent_->SetGuestDateTime(tv.tv_sec, tv.tv_usec));
}

Status VM::AssignSandbox(const std::string& sandbox_id) {
  VMF_RETURN_IF_ERROR(ValidateId("sandbox id", sandbox_id));
  if (!dir_.valid()) return FailedPrecondition("assign sandbox: the VM is stopped");
  std::string sb_dir = config_.runtime_dir + "/sandbox";
  VMF_RETURN_IF_ERROR(MakeDirs(sb_dir));
  log_->info("assign to sandbox {}", sandbox_id);
  auto link = ScopedSymlink::Create(dir_.path(), sb_dir + "/" + sandbox_id);
  if (!link.ok()) return link.status().WithContext("sandbox path");
  // A second assignment moves the VM: its earlier link goes (unless it was
  // the same path, which Create just replaced).
  if (sandbox_link_.path() == link->path()) sandbox_link_.Release();
  sandbox_link_ = std::move(*link);
  return OkStatus();
}

}  // namespace vmf
