#include "storage.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "guest_ops.h"
#include "log.h"

namespace vmf::agent {
namespace {

struct FlagWord {
  const char* word;
  bool clear;  // the word takes the flag off ("rw", "suid")
  unsigned long flag;
};
constexpr FlagWord kFlagWords[] = {
    {"defaults", false, 0},
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"nosuid", false, MS_NOSUID},
    {"suid", true, MS_NOSUID},
    {"nodev", false, MS_NODEV},
    {"dev", true, MS_NODEV},
    {"noexec", false, MS_NOEXEC},
    {"exec", true, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
    {"remount", false, MS_REMOUNT},
    {"mand", false, MS_MANDLOCK},
    {"nomand", true, MS_MANDLOCK},
    {"noatime", false, MS_NOATIME},
    {"atime", true, MS_NOATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"diratime", true, MS_NODIRATIME},
    {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME},
};
struct PropagationWord {
  const char* word;
  unsigned long flags;
};
constexpr PropagationWord kPropagationWords[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// Makes <dev_root>/<name> from <sysfs>/block/<name>/dev unless it exists.
Result<std::string> EnsureBlockNode(const StorageConfig& c, const std::string& name) {
  std::string path = c.dev_root + "/" + name;
  std::string devno;
  std::string dev_file = c.sysfs_root + "/block/" + name + "/dev";
  if (!ReadSmallFile(dev_file, &devno)) return ErrnoStatus(errno, "read " + dev_file);
  char* end = nullptr;
  unsigned long major = std::strtoul(devno.c_str(), &end, 10);
  if (end == devno.c_str() || *end != ':') return DataLoss(dev_file + ": '" + devno + "' is not MAJOR:MINOR");
  const char* minor_start = end + 1;
  unsigned long minor = std::strtoul(minor_start, &end, 10);
  if (end == minor_start || *end != '\0') return DataLoss(dev_file + ": '" + devno + "' is not MAJOR:MINOR");
  const dev_t want = makedev(major, minor);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISBLK(st.st_mode) && st.st_rdev == want) return path;
    ::unlink(path.c_str());  // a node left from an earlier disk of that name
  }
  if (::mknod(path.c_str(), S_IFBLK | 0600, want) != 0 && errno != EEXIST)
    return ErrnoStatus(errno, "mknod " + path);
  return path;
}

// Whether the disk behind node can be opened yet: its sysfs entry appears a
// moment before the kernel lets it be opened (ENXIO until then).
bool BlockDeviceOpens(const std::string& node) {
  int fd = ::open(node.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

}  // namespace

MountOptions ParseMountOptions(const std::vector<std::string>& words) {
  MountOptions o;
  for (const std::string& w : words) {
    if (w.empty()) continue;
    if (w == "bind" || w == "rbind") {
      o.bind = true;
      o.recursive = o.recursive || w == "rbind";
      continue;
    }
    bool known = false;
    for (const FlagWord& f : kFlagWords) {
      if (w != f.word) continue;
      o.flags = f.clear ? (o.flags & ~f.flag) : (o.flags | f.flag);
      known = true;
      break;
    }
    for (const PropagationWord& p : kPropagationWords) {
      if (known || w != p.word) continue;
      o.propagation = p.flags;
      known = true;
    }
    if (known) continue;
    if (!o.data.empty()) o.data += ',';
    o.data += w;
  }
  return o;
}

Status CheckGuestPath(const std::string& what, const std::string& path) {
  if (path.empty() || path[0] != '/')
    return InvalidArgument(what + " '" + path.substr(0, 256) + "' is not absolute");
  if (path.size() > kMaxPathLength) return InvalidArgument(what + " is longer than 4096 bytes");
  if (path.find('\0') != std::string::npos) return InvalidArgument(what + " contains a NUL byte");
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (path.compare(start, slash - start, "..") == 0)
      return InvalidArgument(what + " '" + path.substr(0, 256) + "' has a '..' component");
    start = slash + 1;
  }
  return OkStatus();
}

Status CheckStorage(const grpc::Storage& s) {
  if (s.driver() != "blk" && s.driver() != "local")
    return InvalidArgument("unknown storage driver '" + s.driver().substr(0, 64) +
                           "' (this agent knows blk and local)");
  VMF_RETURN_IF_ERROR(CheckGuestPath("storage mount_point", s.mount_point()));
  if (s.mount_point() == "/") return InvalidArgument("storage mount_point is /");
  if (s.options_size() > static_cast<int>(kMaxOptions)) return InvalidArgument("too many storage options");
  for (const std::string& o : s.options())
    if (o.size() > kMaxPathLength || o.find('\0') != std::string::npos)
      return InvalidArgument("bad storage option");
  if (s.driver() == "blk") {
    if (s.source().empty() || s.source().size() > 256 || s.source().find('/') != std::string::npos ||
        s.source().find('\0') != std::string::npos)
      return InvalidArgument("storage source '" + s.source().substr(0, 64) +
                             "' is not a disk serial (1-256 bytes, no '/')");
    if (s.fstype().empty() || s.fstype().size() > 64 || s.fstype().find('\0') != std::string::npos)
      return InvalidArgument("blk storage needs an fstype (ext4, ...)");
  }
  return OkStatus();
}

Result<std::string> FindBlockDevice(const std::string& sysfs_root, const std::string& serial) {
  std::string dir = sysfs_root + "/block";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir " + dir);
  std::string found;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string got;
    if (!ReadSmallFile(dir + "/" + e->d_name + "/serial", &got)) continue;
    if (Trimmed(got) == serial) {
      found = e->d_name;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) return NotFound("no block device with serial '" + serial + "' in " + dir);
  return found;
}

Result<std::string> WaitBlockDevice(const StorageConfig& c, const std::string& serial) {
  auto deadline = std::chrono::steady_clock::now() + c.wait;
  while (true) {
    Result<std::string> dev = FindBlockDevice(c.sysfs_root, serial);
    Status why = dev.status();
    if (dev.ok()) {
      Result<std::string> node = EnsureBlockNode(c, *dev);
      if (!node.ok()) return node.status();
      if (c.opens ? c.opens(*node) : BlockDeviceOpens(*node)) return node;
      why = Unavailable("cannot open " + *node + " yet");
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return DeadlineExceeded("no block device with serial '" + serial + "' appeared in " +
                              std::to_string(c.wait.count()) + " ms (" + why.message() + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<std::vector<std::string>> MakeDirs(const std::string& path) {
  std::vector<std::string> created;
  size_t pos = 1;
  while (true) {
    size_t slash = path.find('/', pos);
    std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && prefix != "/") {
      if (::mkdir(prefix.c_str(), 0755) == 0) {
        created.push_back(prefix);
      } else if (errno != EEXIST) {
        Status st = ErrnoStatus(errno, "mkdir " + prefix);
        RemoveDirs(created);
        return st;
      }
    }
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    RemoveDirs(created);
    return FailedPrecondition(path + " is not a directory");
  }
  return created;
}

void RemoveDirs(const std::vector<std::string>& created) {
  for (auto it = created.rbegin(); it != created.rend(); ++it)
    if (::rmdir(it->c_str()) != 0 && errno != ENOENT) Log("rmdir %s: %s", it->c_str(), std::strerror(errno));
}

Result<MountedStorage> MountStorage(const StorageConfig& c, const grpc::Storage& s) {
  VMF_RETURN_IF_ERROR(CheckStorage(s));
  std::string source, fstype;
  if (s.driver() == "blk") {
    VMF_ASSIGN_OR_RETURN(source, WaitBlockDevice(c, s.source()));
    fstype = s.fstype();
  } else {
    source = "tmpfs";
    fstype = "tmpfs";
  }
  MountOptions o = ParseMountOptions(std::vector<std::string>(s.options().begin(), s.options().end()));
  MountedStorage m;
  m.mount_point = s.mount_point();
  VMF_ASSIGN_OR_RETURN(m.created_dirs, MakeDirs(m.mount_point));
  const char* data = o.data.empty() ? nullptr : o.data.c_str();
  if (::mount(source.c_str(), m.mount_point.c_str(), fstype.c_str(), o.flags, data) != 0) {
    Status st = ErrnoStatus(errno, "mount " + source + " (" + fstype + ") on " + m.mount_point);
    RemoveDirs(m.created_dirs);
    return st;
  }
  if (o.propagation != 0 && ::mount(nullptr, m.mount_point.c_str(), nullptr, o.propagation, nullptr) != 0) {
    Status st = ErrnoStatus(errno, "set the propagation of " + m.mount_point);
    UnmountStorage(m);
    return st;
  }
  return m;
}

void UnmountStorage(const MountedStorage& m) {
  if (::umount2(m.mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    Log("umount %s: %s", m.mount_point.c_str(), std::strerror(errno));
  RemoveDirs(m.created_dirs);
}

}  // namespace vmf::agent
