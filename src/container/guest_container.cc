#include "container/guest_container.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <random>

#include "common/process.h"
#include "common/scoped_dir.h"
#include "container/rootfs.h"

namespace vmf::container {
namespace {

constexpr char kGuestContainersDir[] = "/run/vmf/containers";

// A virtio-blk serial (at most 20 bytes) that no other disk of the VM has.
std::string NewDiskSerial() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> l(mu);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return std::string("vmf") + buf;
}

// Removes a staging tree (made by root, holding anything) when it goes.
struct TreeGone {
  std::string dir;
  ~TreeGone() {
    (void)RunProgram({"rm", "-rf", "--one-file-system", dir}, Deadline(std::chrono::minutes(5)));
  }
};

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

}  // namespace

Result<std::unique_ptr<GuestContainer>> GuestContainer::Create(VM* vm, const std::string& id,
                                                               const std::string& rootfs_dir, grpc::Spec spec,
                                                               uint32_t free_mib, ContainerTimes* times,
                                                               const std::vector<HostBind>& binds) {
  VMF_RETURN_IF_ERROR(ValidateId("container id", id));
  ContainerTimes local;
  if (!times) times = &local;
  std::unique_ptr<GuestContainer> c(new GuestContainer(vm, id));
  // 1. The image, in the VM's dir (its confined QEMU sees that dir), owned
  //    by the VM's uid.
  auto t = Clock::now();
  c->serial_ = NewDiskSerial();
  const std::string image = vm->dir() + "/rootfs-" + c->serial_ + ".img";
  VMF_RETURN_IF_ERROR(BuildRootfsImage(rootfs_dir, image, free_mib));
  c->image_ = image;
  if (uid_t owner = vm->disk_owner(); owner != 0 && ::chown(image.c_str(), owner, owner) != 0) {
    return ErrnoStatus(errno, "chown " + image);
  }
  times->image_ms = MsSince(t);
  // 2. The disk.
  t = Clock::now();
  VMF_RETURN_IF_ERROR(vm->AddDisk(c->serial_, image, false));
  c->disk_added_ = true;
  times->disk_ms = MsSince(t);
  // 2b. The host binds: copied (owners and modes kept) into a tree of their
  //     own, made a disk, mounted in the guest beside the rootfs, and bound
  //     from there.
  const std::string binds_point = std::string(kGuestContainersDir) + "/" + id + "/binds";
  if (!binds.empty()) {
    const std::string stage = vm->dir() + "/binds-" + id;
    TreeGone stage_gone{stage};
    VMF_RETURN_IF_ERROR(MakeDirs(stage));
    for (size_t i = 0; i < binds.size(); ++i) {
      const HostBind& b = binds[i];
      if (b.source.empty() || b.source[0] != '/')
        return InvalidArgument("bind mount source '" + b.source + "' is not absolute");
      struct stat bs {};
      if (::stat(b.source.c_str(), &bs) != 0) return ErrnoStatus(errno, "bind mount source " + b.source);
      VMF_RETURN_IF_ERROR(RunProgram({"cp", "-a", "--", b.source, stage + "/" + std::to_string(i)},
                                     Deadline(std::chrono::minutes(10)))
                              .status()
                              .WithContext("copy the bind mount source " + b.source));
      const bool ro = std::find(b.options.begin(), b.options.end(), "ro") != b.options.end();
      c->write_back_.push_back(ro ? "" : b.source);
      auto* m = spec.add_mounts();
      m->set_destination(b.destination);
      m->set_source(binds_point + "/" + std::to_string(i));
      m->set_type("bind");
      for (const auto& o : b.options) m->add_options(o);
    }
    c->binds_serial_ = NewDiskSerial();
    const std::string bimage = vm->dir() + "/binds-" + c->binds_serial_ + ".img";
    VMF_RETURN_IF_ERROR(BuildRootfsImage(stage, bimage, 64));
    c->binds_image_ = bimage;
    if (uid_t owner = vm->disk_owner(); owner != 0 && ::chown(bimage.c_str(), owner, owner) != 0) {
      return ErrnoStatus(errno, "chown " + bimage);
    }
    VMF_RETURN_IF_ERROR(vm->AddDisk(c->binds_serial_, bimage, false));
    c->binds_added_ = true;
  }
  // 3. The container in the guest, with its root on that disk.
  t = Clock::now();
  grpc::CreateContainerRequest req;
  req.set_container_id(id);
  req.set_exec_id(id);
  const std::string mount_point = std::string(kGuestContainersDir) + "/" + id + "/rootfs";
  auto* storage = req.add_storages();
  storage->set_driver("blk");
  storage->set_source(c->serial_);
  storage->set_fstype("ext4");
  storage->add_options("noatime");
  storage->set_mount_point(mount_point);
  if (!binds.empty()) {
    auto* b = req.add_storages();
    b->set_driver("blk");
    b->set_source(c->binds_serial_);
    b->set_fstype("ext4");
    b->add_options("noatime");
    b->set_mount_point(binds_point);
  }
  spec.mutable_root()->set_path(mount_point);
  *req.mutable_oci() = std::move(spec);
  VMF_RETURN_IF_ERROR(vm->WithCauses(vm->agent().CreateContainer(req)).WithContext("container " + id));
  c->in_guest_ = true;
  times->create_ms = MsSince(t);
  return c;
}

Status GuestContainer::Start() {
  return vm_->WithCauses(vm_->agent().StartContainer(id_)).WithContext("container " + id_);
}

GuestContainer::~GuestContainer() {
  bool removed = false;
  if (in_guest_ && vm_->Healthy()) {
    Status st = vm_->agent().RemoveContainer(id_, 10);
    if (!st.ok()) vm_->log().warn("container {}: remove in the guest: {}", id_, st.ToString());
    removed = st.ok();  // its processes gone and its disks unmounted (written out)
  }
  if (disk_added_ && vm_->Healthy()) {
    Status st = vm_->RemoveDisk(serial_);
    if (!st.ok()) vm_->log().warn("container {}: remove disk: {}", id_, st.ToString());
  }
  if (binds_added_ && vm_->Healthy()) {
    Status st = vm_->RemoveDisk(binds_serial_);
    if (!st.ok()) vm_->log().warn("container {}: remove the binds disk: {}", id_, st.ToString());
  }
  if (writes_back()) {
    if (removed) {
      CopyBack();
    } else {
      vm_->log().warn("container {}: what it wrote to its read-write binds is lost (its VM is gone)", id_);
    }
  }
  if (!image_.empty()) ::unlink(image_.c_str());
  if (!binds_image_.empty()) ::unlink(binds_image_.c_str());
}

void GuestContainer::CopyBack() {
  std::vector<std::string> paths;
  for (size_t i = 0; i < write_back_.size(); ++i) {
    if (!write_back_[i].empty()) paths.push_back("/" + std::to_string(i));
  }
  if (paths.empty()) return;
  const std::string out = vm_->dir() + "/binds-out-" + id_;
  TreeGone out_gone{out};
  Status st = MakeDirs(out);
  if (st.ok()) st = ExtractFromImage(binds_image_, paths, out);
  for (size_t i = 0; st.ok() && i < write_back_.size(); ++i) {
    if (write_back_[i].empty()) continue;
    Status one = MirrorTree(out + "/" + std::to_string(i), write_back_[i]);
    if (!one.ok()) vm_->log().warn("container {}: {}", id_, one.ToString());
  }
  if (!st.ok())
    vm_->log().warn("container {}: its read-write binds were not copied back: {}", id_, st.ToString());
}

}  // namespace vmf::container
