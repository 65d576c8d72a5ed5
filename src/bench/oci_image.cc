#include "bench/oci_image.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"
#include "common/scoped_dir.h"
#include "factory/digest.h"

namespace vmf::ctrd {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kBusybox[] = "/bin/busybox";
constexpr char kManifestType[] = "application/vnd.oci.image.manifest.v1+json";
constexpr char kConfigType[] = "application/vnd.oci.image.config.v1+json";
constexpr char kLayerType[] = "application/vnd.oci.image.layer.v1.tar";
constexpr char kEpoch[] = "1970-01-01T00:00:00Z";

Status WriteFileMode(const std::string& path, std::string_view data, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return ErrnoStatus(errno, "create " + path);
  VMF_RETURN_IF_ERROR(WriteAll(fd.get(), data, Deadline(std::chrono::seconds(10))));
  if (::fchmod(fd.get(), mode) != 0) return ErrnoStatus(errno, "chmod " + path);
  return OkStatus();
}

Status MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return ErrnoStatus(errno, "mkdir " + path);
  if (::chmod(path.c_str(), mode) != 0) return ErrnoStatus(errno, "chmod " + path);  // umask
  return OkStatus();
}

// Runs argv with stdout into out_file (if not empty) and stderr into a file
// of the staging dir, whose tail an error carries.
Status Run(const std::vector<std::string>& argv, const std::string& out_file, const std::string& err_file) {
  UniqueFd out;
  if (!out_file.empty()) {
    out.reset(::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) return ErrnoStatus(errno, "create " + out_file);
  }
  UniqueFd err(::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!err) return ErrnoStatus(errno, "create " + err_file);
  SpawnOptions opts;
  opts.stdout_fd = out.get();
  opts.stderr_fd = err.get();
  VMF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, opts));
  auto status = child.Wait(Deadline(std::chrono::seconds(120)));
  if (!status.ok()) return status.status().WithContext(argv[0]);
  if (*status != 0) {
    return Internal(argv[0] + " failed (" + DescribeWaitStatus(*status) + "): " + TailOfFile(err_file, 1024));
  }
  return OkStatus();
}

// A deterministic tar of dir's contents ("./..." entries, sorted, mtime 0, 0:0).
Status Tar(const std::string& dir, const std::vector<std::string>& members, const std::string& out_tar,
           const std::string& err_file) {
  std::vector<std::string> argv = {
      "tar",         "--create",   "--file=" + out_tar, "--directory=" + dir, "--format=gnu",
      "--sort=name", "--mtime=@0", "--owner=0",         "--group=0",          "--numeric-owner"};
  argv.insert(argv.end(), members.begin(), members.end());
  return Run(argv, "", err_file);
}

Result<off_t> FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  return st.st_size;
}

struct Blob {
  std::string digest;  // "sha256:HEX"
  int64_t size = 0;
};

// Moves (or writes) a file into blobs/sha256/ under its digest.
Result<Blob> AddBlobFile(const std::string& layout, const std::string& file) {
  VMF_ASSIGN_OR_RETURN(std::string hex, Sha256File(file));
  VMF_ASSIGN_OR_RETURN(off_t size, FileSize(file));
  std::string dest = layout + "/blobs/sha256/" + hex;
  if (::rename(file.c_str(), dest.c_str()) != 0) return ErrnoStatus(errno, "rename " + file + " to " + dest);
  if (::chmod(dest.c_str(), 0644) != 0) return ErrnoStatus(errno, "chmod " + dest);
  return Blob{"sha256:" + hex, static_cast<int64_t>(size)};
}

Result<Blob> AddBlob(const std::string& layout, const std::string& staging, std::string_view data) {
  std::string tmp = staging + "/blob.tmp";
  VMF_RETURN_IF_ERROR(WriteFileMode(tmp, data, 0644));
  return AddBlobFile(layout, tmp);
}

// The applets this busybox has, from `busybox --list` (one name a line).
Result<std::vector<std::string>> Applets(const std::string& staging) {
  std::string list = staging + "/applets";
  VMF_RETURN_IF_ERROR(Run({kBusybox, "--list"}, list, staging + "/busybox.err"));
  VMF_ASSIGN_OR_RETURN(std::string text, ReadFile(list));
  std::set<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    // An applet name is a plain file name; anything else is not trusted.
    if (line.empty() || line == "busybox" || line == "." || line == ".." ||
        line.find('/') != std::string::npos) {
      continue;
    }
    names.insert(line);
  }
  if (names.empty()) return Internal(std::string(kBusybox) + " --list printed no applets");
  return std::vector<std::string>(names.begin(), names.end());
}

Status BuildRootfs(const std::string& rootfs, const std::string& staging) {
  VMF_RETURN_IF_ERROR(MakeDir(rootfs, 0755));
  for (const char* d : {"bin", "etc", "proc", "sys", "dev"})
    VMF_RETURN_IF_ERROR(MakeDir(rootfs + "/" + d, 0755));
  VMF_RETURN_IF_ERROR(MakeDir(rootfs + "/tmp", 01777));
  VMF_RETURN_IF_ERROR(MakeDir(rootfs + "/root", 0700));

  std::error_code ec;
  fs::copy_file(kBusybox, rootfs + "/bin/busybox", fs::copy_options::overwrite_existing, ec);
  if (ec) return Internal("copy " + std::string(kBusybox) + ": " + ec.message());
  if (::chmod((rootfs + "/bin/busybox").c_str(), 0755) != 0) return ErrnoStatus(errno, "chmod busybox");
  VMF_ASSIGN_OR_RETURN(std::vector<std::string> applets, Applets(staging));
  for (const std::string& a : applets) {
    std::string link = rootfs + "/bin/" + a;
    if (::symlink("busybox", link.c_str()) != 0) return ErrnoStatus(errno, "symlink " + link);
  }

  VMF_RETURN_IF_ERROR(WriteFileMode(rootfs + "/etc/passwd",
                                    "root:x:0:0:root:/root:/bin/sh\n"
                                    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                                    0644));
  VMF_RETURN_IF_ERROR(WriteFileMode(rootfs + "/etc/group",
                                    "root:x:0:\n"
                                    "nogroup:x:65534:\n",
                                    0644));
  VMF_RETURN_IF_ERROR(WriteFileMode(rootfs + "/etc/vmf-image-marker", kImageMarkerContents, 0644));
  return OkStatus();
}

}  // namespace

std::string RefTag(const std::string& ref) {
  std::string name = ref.substr(0, ref.find('@'));
  size_t colon = name.rfind(':');
  size_t slash = name.rfind('/');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return "latest";
  return name.substr(colon + 1);
}

Status BuildBusyboxImage(const std::string& out_tar, const std::string& ref,
                         const std::vector<std::string>& cmd) {
  if (ref.empty()) return InvalidArgument("empty image reference");
  if (cmd.empty()) return InvalidArgument("empty image Cmd");
  if (::access(kBusybox, X_OK) != 0) {
    return FailedPrecondition(std::string(kBusybox) + " is missing (apt-get install busybox-static)");
  }
  if (FindProgram("tar").empty()) return FailedPrecondition("tar is not installed");

  // Staging next to the output (same filesystem: the last step is a rename).
  fs::path out_path = fs::absolute(out_tar);
  std::string tmpl = (out_path.parent_path() / ".vmf-oci-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + tmpl);
  ScopedDir staging = ScopedDir::Adopt(tmpl);
  const std::string& st = staging.path();
  const std::string rootfs = st + "/rootfs";
  const std::string layout = st + "/layout";
  const std::string tar_err = st + "/tar.err";

  VMF_RETURN_IF_ERROR(BuildRootfs(rootfs, st));
  VMF_RETURN_IF_ERROR(MakeDir(layout, 0755));
  VMF_RETURN_IF_ERROR(MakeDir(layout + "/blobs", 0755));
  VMF_RETURN_IF_ERROR(MakeDir(layout + "/blobs/sha256", 0755));

  // The layer: uncompressed, so that its digest is also its diff_id.
  std::string layer_tar = st + "/layer.tar";
  VMF_RETURN_IF_ERROR(Tar(rootfs, {"."}, layer_tar, tar_err));
  VMF_ASSIGN_OR_RETURN(Blob layer, AddBlobFile(layout, layer_tar));

  json config = {
      {"architecture", "amd64"},
      {"os", "linux"},
      {"created", kEpoch},
      {"config", {{"Env", {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}, {"Cmd", cmd}, {"WorkingDir", "/"}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {layer.digest}}}},
      {"history", {{{"created", kEpoch}, {"created_by", "vmf::test::BuildBusyboxImage"}}}},
  };
  VMF_ASSIGN_OR_RETURN(Blob config_blob, AddBlob(layout, st, config.dump()));

  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kManifestType},
      {"config", {{"mediaType", kConfigType}, {"digest", config_blob.digest}, {"size", config_blob.size}}},
      {"layers", {{{"mediaType", kLayerType}, {"digest", layer.digest}, {"size", layer.size}}}},
  };
  VMF_ASSIGN_OR_RETURN(Blob manifest_blob, AddBlob(layout, st, manifest.dump()));

  json index = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.index.v1+json"},
      {"manifests",
       {{
           {"mediaType", kManifestType},
           {"digest", manifest_blob.digest},
           {"size", manifest_blob.size},
           {"platform", {{"architecture", "amd64"}, {"os", "linux"}}},
           {"annotations",
            {{"io.containerd.image.name", ref}, {"org.opencontainers.image.ref.name", RefTag(ref)}}},
       }}},
  };
  VMF_RETURN_IF_ERROR(WriteFileMode(layout + "/index.json", index.dump(), 0644));
  VMF_RETURN_IF_ERROR(WriteFileMode(layout + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));

  std::string tmp_out = st + "/image.tar";
  VMF_RETURN_IF_ERROR(Tar(layout, {"oci-layout", "index.json", "blobs"}, tmp_out, tar_err));
  if (::chmod(tmp_out.c_str(), 0644) != 0) return ErrnoStatus(errno, "chmod " + tmp_out);
  if (::rename(tmp_out.c_str(), out_path.c_str()) != 0) {
    return ErrnoStatus(errno, "rename " + tmp_out + " to " + out_path.string());
  }
  return OkStatus();
}

}  // namespace vmf::ctrd
