// TaskService: containerd's shim v2 Task API (containerd.task.v2.Task) for
// the containers of one pod, all in one factory VM.
//
// The first container (a CRI pod's sandbox, or a lone `ctr run` container)
// gets the VM from the factory as `vmfactory run` does (AcquireVM: the
// daemon's pool, else a template clone, else a cold boot), sized from its
// spec's CPU and memory limits. Each container's rootfs becomes a disk of the
// VM (rootfs.h) and an OCI container in the guest (the agent's
// CreateContainer/StartContainer); its processes' stdio goes through
// containerd's FIFOs (stdio.h), and task events go to containerd
// (events.h).
//
// State per process (the init, and each exec): CREATED -> RUNNING ->
// STOPPED, with its exit status and time always set once STOPPED. Wait
// works before Start and after the exit; Kill of a stopped process is OK
// (CRI kills exited tasks); Delete frees the container's disk and guest
// state. Every guest pid is reported as the VM process's pid, since guest
// pids mean nothing on the host. Shutdown ends the shim only when no
// container is left.
//
// A guest that stops answering (no health check answered for
// agent.health_timeout) gets its VM killed, which ends its tasks with 255,
// as when QEMU dies. The guest's OOM kills reach containerd as TaskOOM
// events. Stats answers cgroups v1 Metrics (io.containerd.cgroups.v1), as
// runc's and Kata's shims do.
//
// Each method may be called from many threads at once (the ttrpc server
// runs each request on its own thread).
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/cancel.h"
#include "config/config_file.h"
#include "container/guest_container.h"
#include "container/oci_spec.h"
#include "containerd/shim.pb.h"
#include "shim/events.h"
#include "shim/stdio.h"
#include "ttrpc/server.h"
#include "vm/vm.h"

namespace vmf::shim {

struct ShimOptions {
  std::string ns;                    // containerd namespace
  std::string id;                    // the shim's id: its first container's (the pod sandbox's)
  Config config;                     // vmfactory's config (TOML, or the built-in defaults)
  bool config_from_options = false;  // Create may still set it from runtime options
  // MiB of free room in each container's rootfs image.
  uint32_t rootfs_free_mib = 256;
};

class TaskService {
 public:
  TaskService(ShimOptions options, EventPublisher* events);
  // Stops the VM (which ends every process) and waits for the threads.
  ~TaskService();
  TaskService(const TaskService&) = delete;
  TaskService& operator=(const TaskService&) = delete;

  // Serves containerd.task.v2.Task on `server`.
  void Register(ttrpc::Server* server);
  // Called (once, from a request thread) when Shutdown finds no container
  // left: the shim should stop serving and exit.
  void OnShutdown(std::function<void()> fn) { on_shutdown_ = std::move(fn); }
  // Stops the pod's VM (once no container is left): before the shim stops
  // serving, so that when containerd sees it go, nothing of it is left.
  void StopVm();

  using Status_ = containerd::types::Status;
  Result<containerd::task::v2::CreateTaskResponse> Create(const containerd::task::v2::CreateTaskRequest& req);
  Result<containerd::task::v2::StartResponse> Start(const containerd::task::v2::StartRequest& req);
  Result<containerd::task::v2::StateResponse> State(const containerd::task::v2::StateRequest& req);
  Result<containerd::task::v2::WaitResponse> Wait(const containerd::task::v2::WaitRequest& req);
  Status Kill(const containerd::task::v2::KillRequest& req);
  Result<containerd::task::v2::DeleteResponse> Delete(const containerd::task::v2::DeleteRequest& req);
  Status Exec(const containerd::task::v2::ExecProcessRequest& req);
  Status ResizePty(const containerd::task::v2::ResizePtyRequest& req);
  Status CloseIO(const containerd::task::v2::CloseIORequest& req);
  Result<containerd::task::v2::PidsResponse> Pids(const containerd::task::v2::PidsRequest& req);
  Status Pause(const containerd::task::v2::PauseRequest& req);
  Status Resume(const containerd::task::v2::ResumeRequest& req);
  Status Update(const containerd::task::v2::UpdateTaskRequest& req);
  Result<containerd::task::v2::StatsResponse> Stats(const containerd::task::v2::StatsRequest& req);
  Result<containerd::task::v2::ConnectResponse> Connect(const containerd::task::v2::ConnectRequest& req);
  Status Shutdown(const containerd::task::v2::ShutdownRequest& req);

  // Where a shim keeps what its `delete` needs after a crash: the VM's
  // handle, in the bundle of the container that made the VM.
  static std::string HandleFile(const std::string& bundle) { return bundle + "/vmf-vm.handle"; }

 private:
  struct Proc {
    std::string exec_id;     // "" for a container's init
    std::string agent_exec;  // the agent's exec id (the container id for the init)
    StdioPaths stdio;
    grpc::Process process;  // an exec's process (the init's is in its spec)
    Status_ status = containerd::types::CREATED;
    uint32_t exit_status = 0;
    vmf::wire::Timestamp exited_at;
    std::unique_ptr<ProcessIo> io;
    std::thread waiter;
  };
  struct Container {
    std::string id, bundle;
    std::unique_ptr<container::GuestContainer> guest;  // its disk and guest state
    bool paused = false;
    uint64_t oom_kills = 0;  // OOM events the guest reported for it
    Proc init;
    std::map<std::string, std::unique_ptr<Proc>> execs;
  };

  // The container and (exec_id "" = its init) process; NOT_FOUND naming them.
  Result<std::pair<Container*, Proc*>> FindLocked(const std::string& id, const std::string& exec_id);
  Status EnsureVm(const container::BundleSpec& spec, const std::string& bundle);
  void StartWaiter(Container* c, Proc* p);
  void MarkExited(Container* c, Proc* p, uint32_t status);
  // Undoes what Create did for c (guest container, disk, image, mounts).
  void Teardown(Container* c);
  // Waits for the threads that wait on c's processes (they end with them).
  static void JoinWaiters(Container* c);
  // Stops the VM (ending every guest process and agent call) and drops the
  // handle file `delete` would need; the VM object stays for Teardown.
  void EndVm();
  uint32_t TaskPid() const;
  // The threads that live as long as the VM: one relays the guest's OOM
  // events (GetOOMEvent) as TaskOOM; one ends a VM whose agent stops
  // answering health checks (agent.health_timeout), which ends its tasks.
  void StartMonitors();
  void RelayOomEvents();
  void WatchHealth();

  ShimOptions opt_;
  EventPublisher* events_;
  std::function<void()> on_shutdown_;
  std::mutex ops_mu_;  // one Create, Start or Delete at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a process stopped
  CancelToken cancel_;          // kills the VM's process when cancelled; outlives vm_
  std::unique_ptr<VM> vm_;
  std::string vm_bundle_;  // the bundle holding the VM's handle file
  std::map<std::string, std::unique_ptr<Container>> containers_;
  bool shutting_down_ = false;
  std::thread oom_relay_, health_watch_;
  std::condition_variable monitors_cv_;  // wakes the health watch when the VM ends
  bool vm_ended_ = false;
};

}  // namespace vmf::shim
