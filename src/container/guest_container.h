// GuestContainer: one OCI container in a VM, as the shim and `vmfactory run
// --rootfs` make it: the rootfs tree copied into an ext4 image in the VM's
// dir (rootfs.h), the image hot-added as a disk, and the agent's container
// (CreateContainer) with its root on that disk. Destroying it undoes all
// three: the guest container (its processes killed), the disk, the image.
// Host binds are copies on a second disk; what the container wrote to its
// read-write binds is copied back to their host sources when it is
// destroyed (after its processes are gone and the guest has unmounted the
// disk), while its VM still runs.
//
//   VMF_ASSIGN_OR_RETURN(auto c, GuestContainer::Create(vm, "c1", "/path/rootfs", spec));
//   VMF_RETURN_IF_ERROR(c->Start());          // the spec's process runs
//   vm.agent().WaitProcess(c->init(), ...);   // its stdio: ReadStdout(c->init()) ...
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/status.h"
#include "container/oci_spec.h"
#include "vm/agent_client.h"
#include "vm/vm.h"

namespace vmf::container {

struct ContainerTimes {
  int64_t image_ms = 0;   // the rootfs image made
  int64_t disk_ms = 0;    // hot-added
  int64_t create_ms = 0;  // the guest's CreateContainer (mounting the disk)
};

class GuestContainer {
 public:
  // spec.Root.Path is replaced by the guest's mount point. free_mib: room
  // to write in the image beyond the tree.
  // binds: host paths bound into the container, copied into a second disk
  // (read-only binds stay read-only in the container; the others are
  // copied back at the end, see above).
  static Result<std::unique_ptr<GuestContainer>> Create(VM* vm, const std::string& id,
                                                        const std::string& rootfs_dir, grpc::Spec spec,
                                                        uint32_t free_mib = 256,
                                                        ContainerTimes* times = nullptr,
                                                        const std::vector<HostBind>& binds = {});
  ~GuestContainer();
  GuestContainer(const GuestContainer&) = delete;
  GuestContainer& operator=(const GuestContainer&) = delete;

  // Starts the spec's process (the init); NOT_FOUND for a missing executable.
  Status Start();
  const std::string& id() const { return id_; }
  // The init process, for the agent's stream and wait calls.
  ProcId init() const { return ProcId(id_, id_); }
  const std::string& disk_serial() const { return serial_; }
  // Whether destroying it copies read-write binds back (its VM must still
  // run then, or the writes are lost).
  bool writes_back() const {
    return std::any_of(write_back_.begin(), write_back_.end(),
                       [](const std::string& s) { return !s.empty(); });
  }

 private:
  GuestContainer(VM* vm, std::string id) : vm_(vm), id_(std::move(id)) {}
  VM* vm_;
  std::string id_;
  std::string serial_, image_;
  bool disk_added_ = false;
  std::string binds_serial_, binds_image_;  // the copy of the host binds, if any
  bool binds_added_ = false;
  bool in_guest_ = false;
  std::vector<std::string> write_back_;  // by bind index: the host source of a read-write bind, or ""
  // Copies the read-write binds out of the binds image onto their sources.
  void CopyBack();
};

}  // namespace vmf::container
