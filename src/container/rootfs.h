// A container's root filesystem, carried into its VM as a disk.
//
// containerd hands the shim the snapshot as mounts (an overlay of the image's
// layers with a writable upper dir, usually); the shim mounts them in its own
// mount namespace, copies the tree into a fresh ext4 image (mkfs.ext4 -d),
// unmounts them again, and hot-adds the image to the VM as a virtio disk.
// Why a disk and not a shared file system: a template clone maps guest RAM
// privately, which virtio-fs cannot serve, the cloud guest kernel has no 9p,
// and QEMU 7.2 cannot add a 9p export to a running VM; a disk can be added to
// any VM at any time (docs/containerd.md). The price: the image is a copy, so
// what the container writes stays in its image (never in the template, the
// snapshot or another container) and is gone with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "containerd/types.pb.h"

namespace vmf::container {

// Mounts `mounts` (in order) on target; with none, target is the rootfs as
// it is (containerd mounted it). INVALID_ARGUMENT for a mount without a type.
Status MountRootfs(const std::vector<containerd::types::Mount>& mounts, const std::string& target);
// Unmounts everything on target (lazily, deepest first); OK if nothing is.
Status UnmountRootfs(const std::string& target);

// Writes an ext4 image of dir's tree to image (mode 0600, sparse): big
// enough for the tree plus free_mib of room to write. NOT_FOUND if dir is
// missing, FAILED_PRECONDITION if it is empty (no rootfs).
Status BuildRootfsImage(const std::string& dir, const std::string& image, uint32_t free_mib);

// Copies `paths` (absolute paths in an ext4 image) out of image into
// dest_dir, each as dest_dir/<its last component>, owners and modes kept,
// symlinks as symlinks. The image is read in user space (e2fsprogs'
// debugfs), never mounted on the host: a guest wrote it. NOT_FOUND naming a
// path the image does not have.
Status ExtractFromImage(const std::string& image, const std::vector<std::string>& paths,
                        const std::string& dest_dir);

// Makes `to` hold what `from` holds: a file's bytes; for a directory, every
// entry (recursively) added, replaced or removed to match, symlinks copied
// as symlinks (never followed, on either side), owners and modes kept;
// devices, FIFOs and sockets are left out. `to` itself stays where it is
// (a file is rewritten in place), so a bind source keeps its identity.
Status MirrorTree(const std::string& from, const std::string& to);

}  // namespace vmf::container
