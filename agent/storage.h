// Storage: the file systems CreateContainer mounts in the guest for a
// container (Kata's Storage message), and the mount option words shared with
// the container's own mounts (container.h).
//
// Drivers:
//   "blk"   a virtio-blk disk; `source` is the disk's serial: the device
//           whose <sysfs>/block/<dev>/serial equals it (waited for up to
//           StorageConfig::wait, every 10 ms: the disk may be hot-plugged
//           just before). Its /dev node is made from <sysfs>/block/<dev>/dev
//           with mknod when <dev_root>/<dev> does not exist (no udev).
//           Mounted with `fstype` (ext4, ...) at `mount_point`.
//   "local" a tmpfs at `mount_point`.
// Any other driver is INVALID_ARGUMENT naming it. The mount point is created
// (mkdir -p) and the dirs made for it are removed again by UnmountStorage.
// `options` are mount(8)-like words: "ro", "nosuid", "noatime"... become
// flags, the rest the file system's data ("mode=0755", "size=10m").
//
//   VMF_ASSIGN_OR_RETURN(MountedStorage m, MountStorage(StorageConfig(), storage));
//   ...
//   UnmountStorage(m);  // umount2(MNT_DETACH), then the dirs it made
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "agent.pb.h"
#include "common/status.h"

namespace vmf::agent {

// Bounds on what the host may ask for.
inline constexpr size_t kMaxPathLength = 4096;
inline constexpr size_t kMaxOptions = 64;

// Mount option words, parsed.
struct MountOptions {
  unsigned long flags = 0;        // MS_RDONLY, MS_NOSUID, ...
  unsigned long propagation = 0;  // MS_PRIVATE, MS_SHARED|MS_REC, ... (0: none asked for)
  bool bind = false;              // "bind" or "rbind"
  bool recursive = false;         // "rbind"
  std::string data;               // the words that are not flags, joined with ','
};
MountOptions ParseMountOptions(const std::vector<std::string>& words);

// An absolute path without NUL bytes or ".." components, at most
// kMaxPathLength bytes. `what` names it in the error.
Status CheckGuestPath(const std::string& what, const std::string& path);

struct StorageConfig {
  std::string sysfs_root = "/sys";
  std::string dev_root = "/dev";
  std::chrono::milliseconds wait{10000};
  // Whether a found disk's node can be opened yet (a disk shows in sysfs a
  // moment before it can be: ENXIO). Empty: open(2) it. A test seam.
  std::function<bool(const std::string& node)> opens;
};

// A storage mounted by MountStorage.
struct MountedStorage {
  std::string mount_point;
  std::vector<std::string> created_dirs;  // made for the mount point, outermost first
};

// Checks a storage request without touching anything (driver, paths, sizes).
Status CheckStorage(const grpc::Storage& storage);

// The block device ("vdb") whose <sysfs_root>/block/<dev>/serial is serial,
// in one scan; NOT_FOUND when there is none.
Result<std::string> FindBlockDevice(const std::string& sysfs_root, const std::string& serial);
// Waits (every 10 ms, up to config.wait) for the device of serial, and
// returns its /dev path (<dev_root>/<dev>), making the node if it is missing.
// DEADLINE_EXCEEDED naming the serial when it did not appear.
Result<std::string> WaitBlockDevice(const StorageConfig& config, const std::string& serial);

Result<MountedStorage> MountStorage(const StorageConfig& config, const grpc::Storage& storage);
// Unmounts (lazily: MNT_DETACH) and removes the dirs made for it. Errors are
// logged: there is nobody to tell.
void UnmountStorage(const MountedStorage& mounted);

// mkdir -p path (mode 0755); the dirs it made, outermost first.
Result<std::vector<std::string>> MakeDirs(const std::string& path);
// Removes dirs made by MakeDirs, innermost first (only empty ones).
void RemoveDirs(const std::vector<std::string>& created);

}  // namespace vmf::agent
