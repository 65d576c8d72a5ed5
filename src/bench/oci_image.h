// BuildBusyboxImage: a small OCI image made offline from the host's
// /bin/busybox (Debian's busybox-static), for the containerd tests.
//
//   VMF_RETURN_IF_ERROR(BuildBusyboxImage(dir + "/image.tar", kTestImageRef));
//   ctr images import image.tar   ->  an image named kTestImageRef
//
// The tarball is an OCI image layout (oci-layout, index.json, blobs/sha256/)
// holding one manifest, its config and one uncompressed layer with
//   /bin/busybox and a symlink /bin/APPLET -> busybox for each applet,
//   /etc/passwd and /etc/group (root, nobody/nogroup 65534),
//   /etc/vmf-image-marker ("from-the-image\n"),
//   /tmp (1777), /root (0700), /proc, /sys, /dev (empty mount points).
// Config: linux/amd64, Env PATH=/usr/sbin:/usr/bin:/sbin:/bin, Cmd ["sh"]
// (or the `cmd` given: a CRI sandbox image, say, that keeps running).
// The index names the image twice: io.containerd.image.name = ref (what
// `ctr images import` names it by) and org.opencontainers.image.ref.name =
// ref's tag (the OCI layout convention). Deterministic: the same busybox
// and ref give the same bytes (mtime 0, sorted entries, owner 0:0).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace vmf::ctrd {

// The reference the tests import the image as.
inline constexpr char kTestImageRef[] = "docker.io/library/vmf-busybox:test";
// What /etc/vmf-image-marker holds in the image.
inline constexpr char kImageMarkerContents[] = "from-the-image\n";

// Writes the image to out_tar (atomically: a temp file renamed into place).
// FAILED_PRECONDITION if /bin/busybox or tar is missing; cmd is the
// image config's Cmd (INVALID_ARGUMENT if empty).
Status BuildBusyboxImage(const std::string& out_tar, const std::string& ref,
                         const std::vector<std::string>& cmd = {"sh"});

// The tag of a reference ("docker.io/library/x:test" -> "test"; "latest"
// when there is none). Exposed for tests.
std::string RefTag(const std::string& ref);

}  // namespace vmf::ctrd
