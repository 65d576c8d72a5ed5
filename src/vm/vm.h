// VM: one booted virtual machine with its guest agent answering.
//
// VM::Create is the seed's NewVM: validate, make the runtime dir, start the
// VM process (QEMU), start the proxy while the guest boots, connect to the
// agent and wait for it. Its parts come from VmDeps: a hypervisor backend and
// a proxy launcher, which unit tests replace with fakes.
// Each step is owned by a member whose destructor undoes it, so a failure at
// any step leaves nothing behind, and so does destroying a VM.
//
//   VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(DefaultVMConfig()));
//   VMF_RETURN_IF_ERROR(vm->agent().ExecProcess({.exec_id = "e1", .args = {"true"}}));
//   vm->Stop();
#pragma once

#include <spdlog/logger.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/cancel.h"
#include "common/cgroup.h"
#include "common/ids.h"
#include "common/scoped.h"
#include "common/scoped_dir.h"
#include "common/status.h"
#include "common/uid_lease.h"
#include "hypervisor/hypervisor.h"
#include "vm/agent_client.h"
#include "vm/agent_proxy.h"
#include "vm/config.h"
#include "vm/handle.h"

namespace vmf {

// Durations of Create's steps, in order, for `-v` and the benchmarks.
using StepTimes = std::vector<std::pair<std::string, Duration>>;

// Appends (step, time since the previous step) to a StepTimes, if given.
class StepTimer {
 public:
  explicit StepTimer(StepTimes* out) : out_(out), start_(Clock::now()) {}
  void Done(const std::string& step) {
    auto now = Clock::now();
    if (out_) out_->emplace_back(step, std::chrono::duration_cast<Duration>(now - start_));
    start_ = now;
  }

 private:
  StepTimes* out_;
  Clock::time_point start_;
};

// What a VM is made with. Null members take the defaults: the backend that
// config.hypervisor.backend names, and the vmfactory-proxy program. Unit
// tests pass fakes (tests/mocks/).
struct VmDeps {
  HypervisorBackend* backend = nullptr;
  ProxyLauncher* proxy = nullptr;
};

class VM {
 public:
  // `cancel`, if given, aborts a Create in progress (the VM is killed and
  // everything cleaned up) and, once created, kills QEMU so that every
  // pending agent call fails at once.
  static Result<std::unique_ptr<VM>> Create(const VMConfig& config, StepTimes* times = nullptr,
                                            CancelToken* cancel = nullptr, const VmDeps& deps = {});
  // Takes over a VM that another process created and Release()d: adopts
  // its VM process, the proxy and the runtime dir, and connects to the
  // hypervisor's control channel and the agent.
  static Result<std::unique_ptr<VM>> Attach(const VMHandle& handle, const VMConfig& config,
                                            const VmDeps& deps = {});
  ~VM();
  VM(const VM&) = delete;
  VM& operator=(const VM&) = delete;

  const std::string& id() const { return id_; }
  uint32_t cpus() const { return cpus_; }
  uint32_t memory_mib() const { return memory_mib_; }
  const std::string& dir() const { return dir_.path(); }
  std::string proxy_url() const { return "unix://" + ProxySocketPath(dir_.path()); }
  pid_t proxy_pid() const { return proxy_ ? proxy_->pid() : -1; }
  pid_t vmm_pid() const { return hypervisor_ ? hypervisor_->pid() : -1; }
  AgentClient& agent() { return *agent_; }
  // The cgroup of its QEMU and proxy (config.limits); not valid() when the
  // limits are off or could not be applied (limits_state() says which).
  const VmCgroup& cgroup() const { return cgroup_; }
  // "applied (cgroup v1 ...)", "off", or "not applied: why".
  const std::string& limits_state() const { return limits_state_; }
  spdlog::logger& log() { return *log_; }

  Status Pause();
  // Saves the device state (for a template; RAM stays in its file).
  Status Save();
  Status Resume();
  // Kicks off a configured VM: a clone restores its state and resumes; a
  // paused VM resumes; a running one is left as it is.
  Status Start();
  // Stops the VM process and the proxy and removes the runtime dir.
  // Idempotent; also what the destructor does.
  void Stop();
  // Drops the agent connection and stops the proxy (before a template save).
  void Disconnect();
  Status AddCPUs(uint32_t count);
  Status AddMemory(uint32_t mib);
  // Hot-adds an image file as a disk the guest finds by its serial
  // (/sys/block/*/serial), and unplugs it (Hypervisor::AddDisk). The file
  // must be readable (and writable unless read_only) by the VM process:
  // disk_owner() is who it runs as.
  Status AddDisk(const std::string& serial, const std::string& path, bool read_only);
  Status RemoveDisk(const std::string& serial);
  // The uid and gid the VM process runs as (0 when not confined to one).
  uid_t disk_owner() const { return uid_.uid(); }
  // Hot-adds vCPUs and memory up to the size asked (nothing if the VM is
  // already that big) and onlines them; true if anything was added.
  Result<bool> GrowTo(uint32_t cpus, uint32_t memory_mib);
  // Onlines the vCPUs and memory hot-added since the last call.
  Status OnlineCPUMemory();
  // 512 bytes of host randomness into the guest CRNG, then a forced reseed.
  Status ReseedRNG();
  // The VM generation id its guest is shown (Hypervisor::GenerationId).
  Result<std::string> GenerationId();
  // Sets the guest clock from the host's.
  Status SyncClock();
  // Binds the VM to a sandbox id: RUNTIME/sandbox/ID becomes a link to the
  // VM's dir. The id is validated (no path separators or traversal).
  Status AssignSandbox(const std::string& sandbox_id);

  // From now on, cancelling `cancel` kills the VM process (Create does this
  // itself).
  void KillOnCancel(CancelToken* cancel);

  // Hands the VM to another process: keeps QEMU, the proxy and the runtime
  // dir alive, closes our connections, and returns what the taker needs.
  VMHandle Release();
  VMHandle handle() const;

  // Whether the VM process is still running.
  bool Running() { return hypervisor_ && hypervisor_->Running(); }
  // Adds to a failed call's error which of the VM process and the proxy has
  // died (and how), so that "connection closed" says why. OK stays OK.
  Status WithCauses(const Status& st);
  // Whether both the VM process and the proxy (the only way to the agent)
  // are running.
  bool Healthy() { return Running() && proxy_ && !proxy_->Exited().has_value(); }

 private:
  VM(VMConfig config, std::string id, const VmDeps& deps);
  ProxyRequest ProxyRequestFor() const;
  // Resolves how the VM's processes run from [security]: as root, a leased
  // uid that owns the VM's dir, and a jail; always the VMM's seccomp.
  Status Confine();
  // Takes the VM's cgroup (made, or adopted with a handed-over VM).
  void UseCgroup(VmCgroup cgroup);
  // The cgroup limits of a VM of that size (config_.limits).
  CgroupLimits LimitsFor(uint32_t cpus, uint32_t memory_mib) const;
  // Sets the cgroup's limits for that size (nothing without a cgroup).
  Status UpdateLimits(uint32_t cpus, uint32_t memory_mib);
  // Lets a test inject a fault here (common/failpoint.h).
  void FailPoint(std::string_view point) const;
  // WithCauses plus what the VM process and the guest console said last.
  Status WithCausesAndLogs(const Status& st);

  VMConfig config_;
  VmDeps deps_;  // resolved: never null
  std::string id_;
  std::shared_ptr<spdlog::logger> log_;
  uint32_t cpus_;
  uint32_t memory_mib_;
  uint32_t cpu_delta_ = 0;
  bool restored_ = false;
  // Owners, declared in creation order: destroyed (undone) in reverse.
  ScopedDir dir_;
  UidLease uid_;     // as root: the VM's own identity (its dir and processes)
  VmCgroup cgroup_;  // outlives the processes in it
  std::string limits_state_ = "off";
  std::unique_ptr<Hypervisor> hypervisor_;
  std::unique_ptr<AgentProxy> proxy_;
  std::unique_ptr<AgentClient> agent_;
  ScopedCancelAction kill_on_cancel_;
  ScopedSymlink sandbox_link_;
};

// Stops a VM that another process handed over and then lost (it died, or
// its owner did): takes it over and stops it, or, when that fails, stops
// what is left of it by what its processes are (never by a recorded pid
// alone) and removes its dir, cgroup and uid lease, checking first that
// the dir is really a VM's.
void StopVmOf(const VMHandle& h, const VMConfig& config, const VmDeps& deps = {});
// The second half of StopVmOf: what is left of a VM whose VM process is gone.
void RemoveVmRemains(const VMHandle& h);

// The memory a hot-add of `mib` really adds: whole guest memory blocks of
// block_bytes (128 MiB when the guest does not say or says less than 1 MiB).
uint32_t HotplugMemorySize(uint32_t mib, uint64_t block_bytes);
// Whether dir can be a VM's runtime dir: absolute, normal, ending in vm/ID,
// a real directory (not a link) of ours with mode 0700.
// vm_uid, when not 0, may own it instead (the VM's own uid).
Status CheckVmDir(const std::string& dir, const std::string& id, uint32_t vm_uid = 0);
// 32 hex characters of fresh randomness.
std::string NewVmId();

}  // namespace vmf
