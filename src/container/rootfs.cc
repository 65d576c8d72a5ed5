#include "container/rootfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <mutex>

#include "common/fd.h"
#include "common/io.h"
#include "common/process.h"

namespace vmf::container {
namespace {

// Splits mount(8)-style options into flags and the rest (file system data).
void SplitOptions(const containerd::types::Mount& m, unsigned long* flags, std::string* data) {
  static const std::map<std::string, unsigned long> kFlags = {
      {"ro", MS_RDONLY},       {"nosuid", MS_NOSUID},     {"nodev", MS_NODEV},
      {"noexec", MS_NOEXEC},   {"bind", MS_BIND},         {"rbind", MS_BIND | MS_REC},
      {"noatime", MS_NOATIME}, {"relatime", MS_RELATIME}, {"sync", MS_SYNCHRONOUS}};
  *flags = 0;
  data->clear();
  for (const std::string& o : m.options()) {
    if (o == "rw" || o == "defaults") continue;
    if (auto f = kFlags.find(o); f != kFlags.end()) {
      *flags |= f->second;
    } else {
      if (!data->empty()) *data += ",";
      *data += o;
    }
  }
}

uint64_t g_tree_bytes = 0;
uint64_t g_tree_entries = 0;
int CountEntry(const char*, const struct stat* st, int, struct FTW*) {
  g_tree_bytes += static_cast<uint64_t>(st->st_blocks) * 512;
  ++g_tree_entries;
  return 0;
}

}  // namespace

Status MountRootfs(const std::vector<containerd::types::Mount>& mounts, const std::string& target) {
  for (const auto& m : mounts) {
    if (m.type().empty()) return InvalidArgument("rootfs mount of " + m.source() + " has no type");
    unsigned long flags = 0;
    std::string data;
    SplitOptions(m, &flags, &data);
    if (m.type() == "bind") flags |= MS_BIND;
    // Read-only is fine: the tree is only copied from.
    if (::mount(m.source().c_str(), target.c_str(), m.type().c_str(), flags,
                data.empty() ? nullptr : data.c_str()) != 0) {
      return ErrnoStatus(errno, "mount " + m.type() + " " + m.source() + " on " + target);
    }
    if ((flags & MS_BIND) && (flags & MS_RDONLY)) {
      (void)::mount(nullptr, target.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
    }
  }
  return OkStatus();
}

Status UnmountRootfs(const std::string& target) {
  auto mounts = ReadFile("/proc/self/mountinfo", 16u << 20);
  if (!mounts.ok()) return mounts.status();
  std::vector<std::string> under;
  size_t pos = 0;
  while (pos < mounts->size()) {
    size_t eol = mounts->find('\n', pos);
    if (eol == std::string::npos) eol = mounts->size();
    std::string line = mounts->substr(pos, eol - pos);
    pos = eol + 1;
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..."
    size_t f = 0;
    for (int i = 0; i < 4 && f != std::string::npos; ++i) f = line.find(' ', f + 1);
    if (f == std::string::npos) continue;
    size_t e = line.find(' ', f + 1);
    std::string mp = line.substr(f + 1, e == std::string::npos ? std::string::npos : e - f - 1);
    if (mp == target || mp.rfind(target + "/", 0) == 0) under.push_back(mp);
  }
  std::sort(under.begin(), under.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  Status first;
  for (const auto& mp : under) {
    if (::umount2(mp.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT && first.ok()) {
      first = ErrnoStatus(errno, "umount " + mp);
    }
  }
  return first;
}

Status BuildRootfsImage(const std::string& dir, const std::string& image, uint32_t free_mib) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "rootfs " + dir);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument("rootfs " + dir + " is not a directory");
  static std::mutex walk_mu;  // nftw's callback has no context pointer
  std::unique_lock<std::mutex> walking(walk_mu);
  g_tree_bytes = 0;
  g_tree_entries = 0;
  if (::nftw(dir.c_str(), CountEntry, 64, FTW_PHYS | FTW_MOUNT) != 0)
    return ErrnoStatus(errno, "walk " + dir);
  const uint64_t tree_bytes = g_tree_bytes, tree_entries = g_tree_entries;
  walking.unlock();
  if (tree_entries <= 1) return FailedPrecondition("rootfs " + dir + " is empty: no image was mounted there");
  // Room for the files, their inodes and ext4's own metadata, plus free_mib.
  const uint64_t bytes = tree_bytes + tree_entries * 4096 + (uint64_t{free_mib} << 20);
  const uint64_t mib = std::max<uint64_t>(32, bytes * 5 / 4 / (1 << 20) + 16);
  {
    UniqueFd fd(::open(image.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return ErrnoStatus(errno, "create " + image);
    if (::ftruncate(fd.get(), static_cast<off_t>(mib << 20)) != 0) return ErrnoStatus(errno, "size " + image);
  }
  // No journal: the image lives as long as its container, never across a
  // crash; no reserved blocks; the tree copied in with owners and modes.
  auto made = RunProgram({"mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-E",
                          "lazy_itable_init=1,nodiscard", "-d", dir, image},
                         Deadline(std::chrono::minutes(10)));
  if (!made.ok()) {
    ::unlink(image.c_str());
    return made.status().WithContext("cannot make the rootfs image of " + dir);
  }
  return OkStatus();
}

Status ExtractFromImage(const std::string& image, const std::vector<std::string>& paths,
                        const std::string& dest_dir) {
  // debugfs takes one request line: nothing in it may need quoting.
  auto plain = [](const std::string& p) {
    return !p.empty() && p[0] == '/' && p.find_first_of(" \t\n\"'\\") == std::string::npos;
  };
  if (!plain(dest_dir)) return InvalidArgument("cannot extract into '" + dest_dir + "'");
  std::string request = "rdump";
  for (const std::string& p : paths) {
    if (!plain(p)) return InvalidArgument("cannot extract '" + p + "' from an image");
    request += " " + p;
  }
  request += " " + dest_dir;
  VMF_RETURN_IF_ERROR(
      RunProgram({"debugfs", "-R", request, image}, Deadline(std::chrono::minutes(10))).status());
  // debugfs reports a missing path on stderr and still exits 0.
  for (const std::string& p : paths) {
    std::string leaf = p.substr(p.rfind('/') + 1);
    struct stat st {};
    if (::lstat((dest_dir + "/" + leaf).c_str(), &st) != 0) {
      return NotFound("no " + p + " in the image " + image);
    }
  }
  return OkStatus();
}

namespace {

namespace fs = std::filesystem;

constexpr int kMaxMirrorDepth = 256;

Status FsError(const std::error_code& ec, const std::string& what) {
  return Internal(what + ": " + ec.message());
}

// Copies owner and mode of `from` to `to` (not following a symlink).
Status CopyOwnerAndMode(const fs::path& from, const fs::path& to, bool symlink) {
  struct stat st {};
  if (::lstat(from.c_str(), &st) != 0) return ErrnoStatus(errno, "lstat " + from.string());
  if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0) return ErrnoStatus(errno, "lchown " + to.string());
  if (!symlink && ::chmod(to.c_str(), st.st_mode & 07777) != 0)
    return ErrnoStatus(errno, "chmod " + to.string());
  return OkStatus();
}

Status MirrorEntry(const fs::path& from, const fs::path& to, int depth) {
  if (depth > kMaxMirrorDepth) return InvalidArgument("tree deeper than " + std::to_string(kMaxMirrorDepth));
  std::error_code ec;
  const fs::file_status fst = fs::symlink_status(from, ec);
  if (ec) return FsError(ec, from.string());
  const fs::file_status tst = fs::symlink_status(to, ec);
  const bool to_exists = !ec && fs::exists(tst);
  auto clear = [&]() -> Status {
    std::error_code rec;
    fs::remove_all(to, rec);  // does not follow symlinks
    if (rec) return FsError(rec, "remove " + to.string());
    return OkStatus();
  };
  if (fs::is_symlink(fst)) {
    fs::path target = fs::read_symlink(from, ec);
    if (ec) return FsError(ec, from.string());
    if (to_exists) VMF_RETURN_IF_ERROR(clear());
    fs::create_symlink(target, to, ec);
    if (ec) return FsError(ec, "symlink " + to.string());
    return CopyOwnerAndMode(from, to, true);
  }
  if (fs::is_directory(fst)) {
    if (to_exists && !fs::is_directory(tst)) VMF_RETURN_IF_ERROR(clear());
    if (!to_exists || !fs::is_directory(tst)) {
      fs::create_directory(to, ec);
      if (ec) return FsError(ec, "mkdir " + to.string());
    }
    std::vector<fs::path> gone;
    for (auto it = fs::directory_iterator(to, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      std::error_code sec;
      if (!fs::exists(fs::symlink_status(from / it->path().filename(), sec))) gone.push_back(it->path());
    }
    if (ec) return FsError(ec, "list " + to.string());
    for (const fs::path& g : gone) {
      fs::remove_all(g, ec);
      if (ec) return FsError(ec, "remove " + g.string());
    }
    for (auto it = fs::directory_iterator(from, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      VMF_RETURN_IF_ERROR(MirrorEntry(it->path(), to / it->path().filename(), depth + 1));
    }
    if (ec) return FsError(ec, "list " + from.string());
    return CopyOwnerAndMode(from, to, false);
  }
  if (fs::is_regular_file(fst)) {
    if (to_exists && !fs::is_regular_file(tst)) VMF_RETURN_IF_ERROR(clear());
    // In place: the file keeps its inode (a bind source may be a mount point).
    UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!in) return ErrnoStatus(errno, "open " + from.string());
    UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) return ErrnoStatus(errno, "open " + to.string());
    VMF_RETURN_IF_ERROR(CopyToEnd(in.get(), out.get(), "copy " + from.string() + " to " + to.string()));
    return CopyOwnerAndMode(from, to, false);
  }
  return OkStatus();  // a device, FIFO or socket: not carried back
}

}  // namespace

Status MirrorTree(const std::string& from, const std::string& to) {
  return MirrorEntry(from, to, 0).WithContext("copy " + from + " back to " + to);
}

}  // namespace vmf::container
