// Containers: the OCI containers of CreateContainer, as the Kata agent keeps
// them: each with its spec, the storages mounted for it, its cgroup and its
// state. The processes (the init and every ExecProcess in it) live in the
// ProcessTable under (container id, exec id); the service (service.h) ties
// the two together:
//
//   CreateContainer  ids checked, spec checked and turned into a
//                    ContainerInit (PrepareContainerInit), storages mounted
//                    (storage.h), a cgroup made with the spec's limits
//                    (container_cgroup.h), recorded as created.
//   StartContainer   Spawn(spec.Process, {.init = &c->init}) with the
//                    cgroup joined before the child goes on; the init in the
//                    process table under (id, exec id of the create).
//   ExecProcess      Spawn(process, {.join = {init pid}}) while the init runs.
//   RemoveContainer  the processes killed and reaped (ProcessTable), then
//                    Remove() here: cgroup removed, storages unmounted.
//
// Bounds: at most Options::max_containers containers; ids are 1-64 of
// [A-Za-z0-9_.-], not starting with '.' or '-' (the host's rule for
// sandbox and VM ids, vmf::ValidateId in src/vm); paths at most 4096 bytes,
// at most 128 mounts, 128 masked and 128 read-only paths and 16 storages.
//
//   Containers cs(Containers::Options{});
//   VMF_RETURN_IF_ERROR(cs.Create(request));
//   Container* c = cs.Find("c1");
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/status.h"
#include "container_cgroup.h"
#include "spawn.h"
#include "storage.h"

namespace vmf::agent {

inline constexpr size_t kMaxContainerMounts = 128;
inline constexpr size_t kMaxContainerPaths = 128;
inline constexpr size_t kMaxStorages = 16;

// An id of a container or an exec: 1-64 of [A-Za-z0-9_.-], not starting
// with '.' or '-'. `what` names it in the error.
Status ValidateContainerId(const std::string& what, const std::string& id);

// The prefix of a Linux.Namespaces Path that names another container of the
// VM whose namespace of that type to join ("container:ID"), as the host
// sends for a pod's containers; only "ipc", "uts" and "pid" may be shared.
inline constexpr char kShareNamespacePrefix[] = "container:";

// Checks a spec and prepares how its init builds the container's
// filesystem: the default mounts (proc on /proc, a tmpfs on /dev with its
// nodes, devpts on /dev/pts, tmpfs on /dev/shm, mqueue on /dev/mqueue if the
// kernel has it, sysfs read-only on /sys), each replaced in place by a spec
// mount with the same destination, then the other spec mounts in order
// (cgroup mounts are skipped). INVALID_ARGUMENT for a spec without
// Process.Args or Root.Path, a relative or too long path, an unknown rlimit,
// a hostname over 64 bytes, or too many mounts or paths.
Result<ContainerInit> PrepareContainerInit(const grpc::Spec& spec);

struct Container {
  enum class State { kCreated, kRunning };
  std::string id;
  std::string exec_id;  // of the init process
  grpc::Spec spec;
  ContainerInit init;
  std::vector<MountedStorage> storages;
  ContainerCgroup cgroup;  // !valid(): the guest has no cgroups
  State state = State::kCreated;
  pid_t init_pid = -1;  // once started
  // Namespaces ("ipc", "uts", "pid") it shares with another container of
  // the VM (a pod's sandbox), from the spec's Linux.Namespaces entries whose
  // Path is "container:ID": joined when it starts.
  std::map<std::string, std::string> share;
};

class Containers {
 public:
  struct Options {
    size_t max_containers = 64;
    StorageConfig storage;
    CgroupConfig cgroup;
  };

  explicit Containers(Options options) : opt_(std::move(options)) {}
  // Removes what is left: cgroups (their processes must be gone: the
  // process table is destroyed first) and storages.
  ~Containers();
  Containers(const Containers&) = delete;
  Containers& operator=(const Containers&) = delete;

  // Checks a CreateContainerRequest without changing anything: ids, limits,
  // storages, spec (ALREADY_EXISTS for a known id, RESOURCE_EXHAUSTED when
  // full, else INVALID_ARGUMENT).
  Status Check(const grpc::CreateContainerRequest& req) const;
  // Check, then mounts the storages, checks the rootfs, makes the cgroup
  // and records the container (created). On an error nothing is left.
  Status Create(const grpc::CreateContainerRequest& req);
  Container* Find(const std::string& id);
  // Unmounts the container's storages, removes its cgroup and forgets it.
  // Its processes must be gone. NOT_FOUND for an unknown id.
  Status Remove(const std::string& id);
  size_t size() const { return containers_.size(); }

 private:
  Options opt_;
  std::map<std::string, std::unique_ptr<Container>> containers_;
};

}  // namespace vmf::agent
