#include "container/rootfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <mutex>

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

}  // namespace vmf::container
