#include "common/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "common/io.h"

namespace vmf {
namespace {

// What the programs we jail (QEMU, the proxy) need from the host's root:
// code and libraries, nothing with data of the host or of other VMs.
constexpr const char* kSystemDirs[] = {"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"};
constexpr const char* kSystemFiles[] = {"/etc/ld.so.cache"};
constexpr const char* kDevices[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};

bool IsUnder(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/';
}

}  // namespace

JailBuilder::JailBuilder(std::string root_dir) : root_(std::move(root_dir)) {}

JailBuilder& JailBuilder::ReadOnly(const std::string& path) {
  wants_.push_back({path, JailStep::kBindRO});
  return *this;
}

JailBuilder& JailBuilder::Writable(const std::string& path) {
  wants_.push_back({path, JailStep::kBindRW});
  return *this;
}

JailBuilder& JailBuilder::Device(const std::string& path) {
  wants_.push_back({path, JailStep::kBindDev});
  return *this;
}

Result<std::vector<JailStep>> JailBuilder::Build() const {
  if (root_.empty() || root_[0] != '/') return InvalidArgument("jail root '" + root_ + "' is not absolute");
  std::vector<JailStep> steps;
  std::set<std::string> dirs_made = {"/"};
  std::vector<std::string> bound_dirs;  // dirs bound whole: nothing is added beneath them
  auto covered = [&](const std::string& p) {
    return std::any_of(bound_dirs.begin(), bound_dirs.end(),
                       [&](const std::string& d) { return IsUnder(p, d); });
  };
  // The dirs leading to `path`, each made once.
  auto make_parents = [&](const std::string& path) {
    for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
      std::string d = path.substr(0, pos);
      if (dirs_made.insert(d).second) steps.push_back({JailStep::kDir, "", root_ + d, d});
    }
  };
  auto add = [&](const std::string& path, JailStep::Kind kind) -> Status {
    if (path.empty() || path[0] != '/')
      return InvalidArgument("jail: '" + path + "' is not an absolute path");
    if (path.find("/../") != std::string::npos || path.find("/./") != std::string::npos) {
      return InvalidArgument("jail: '" + path + "' is not a normal path");
    }
    if (covered(path)) return OkStatus();
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "jail: " + path);
    make_parents(path);
    if (S_ISDIR(st.st_mode)) {
      if (dirs_made.insert(path).second) steps.push_back({JailStep::kDir, "", root_ + path, path});
      bound_dirs.push_back(path);
    } else {
      steps.push_back({JailStep::kFile, "", root_ + path, path});
    }
    steps.push_back({kind, path, root_ + path, path});
    return OkStatus();
  };

  for (const char* d : kSystemDirs) {
    struct stat st {};
    if (::lstat(d, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      // Debian's merged /usr: /lib -> usr/lib and so on.
      char target[4096];
      ssize_t n = ::readlink(d, target, sizeof(target) - 1);
      if (n <= 0) return ErrnoStatus(errno, std::string("jail: readlink ") + d);
      steps.push_back({JailStep::kSymlink, std::string(target, static_cast<size_t>(n)), root_ + d, d});
      dirs_made.insert(d);
    } else if (S_ISDIR(st.st_mode)) {
      VMF_RETURN_IF_ERROR(add(d, JailStep::kBindRO));
    }
  }
  for (const char* f : kSystemFiles) {
    if (::access(f, R_OK) == 0) VMF_RETURN_IF_ERROR(add(f, JailStep::kBindRO));
  }
  for (const char* dev : kDevices) VMF_RETURN_IF_ERROR(add(dev, JailStep::kBindDev));
  make_parents("/proc/");
  steps.push_back({JailStep::kProc, "", root_ + "/proc", "/proc"});
  for (const Want& w : wants_) VMF_RETURN_IF_ERROR(add(w.path, w.kind));
  return steps;
}

std::string Confinement::DescribeStep(int index) const {
  switch (index) {
    case kJailStepNamespaces:
      return "new namespaces";
    case kJailStepRootTmpfs:
      return "mount the jail's root on " + root_dir;
    case kJailStepPivot:
      return "enter the jail (pivot_root)";
    case kJailStepReadOnlyRoot:
      return "make the jail's root read-only";
    case kJailStepNoNewPrivs:
      return "set no_new_privs";
    case kJailStepIds:
      return "switch to uid " + std::to_string(uid) + " gid " + std::to_string(gid);
    case kJailStepCapabilities:
      return "drop capabilities";
    default:
      break;
  }
  if (index < 0 || static_cast<size_t>(index) >= steps.size()) return "setup step " + std::to_string(index);
  const JailStep& s = steps[static_cast<size_t>(index)];
  switch (s.kind) {
    case JailStep::kDir:
      return "jail: mkdir " + s.what;
    case JailStep::kSymlink:
      return "jail: symlink " + s.what + " -> " + s.source;
    case JailStep::kFile:
      return "jail: create mount point " + s.what;
    case JailStep::kProc:
      return "jail: mount proc";
    default:
      return "jail: bind-mount " + s.source + (s.kind == JailStep::kBindRO ? " read-only" : "");
  }
}

bool ApplyConfinementInChild(const Confinement& c, int* step, int* err) {
  auto fail = [&](int failed) {
    *err = errno;
    *step = failed;
    return false;
  };
  if (!c.root_dir.empty()) {
    // Our mounts stay in our namespace: nothing propagates back to the host.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return fail(kJailStepNamespaces);
    if (::mount("vmf-jail", c.root_dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) {
      return fail(kJailStepRootTmpfs);
    }
    for (size_t i = 0; i < c.steps.size(); ++i) {
      const JailStep& s = c.steps[i];
      const char* t = s.target.c_str();
      int rc = 0;
      switch (s.kind) {
        case JailStep::kDir:
          rc = ::mkdir(t, 0755);
          if (rc != 0 && errno == EEXIST) rc = 0;
          if (rc == 0) rc = ::chmod(t, 0755);  // whatever the child's umask: every uid may pass
          break;
        case JailStep::kSymlink:
          rc = ::symlink(s.source.c_str(), t);
          break;
        case JailStep::kFile: {
          int fd = ::open(t, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
          rc = fd < 0 ? -1 : ::close(fd);
          break;
        }
        case JailStep::kProc:
          rc = ::mount("proc", t, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
          break;
        case JailStep::kBindRO:
        case JailStep::kBindRW:
        case JailStep::kBindDev: {
          rc = ::mount(s.source.c_str(), t, nullptr, MS_BIND, nullptr);
          if (rc != 0) break;
          unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID;
          if (s.kind != JailStep::kBindDev) flags |= MS_NODEV;
          if (s.kind == JailStep::kBindRO) flags |= MS_RDONLY;
          rc = ::mount(nullptr, t, nullptr, flags, nullptr);
          break;
        }
      }
      if (rc != 0) return fail(static_cast<int>(i));
    }
    // pivot_root(".", ".") stacks the old root under the new one; detaching
    // it leaves only the jail.
    if (::chdir(c.root_dir.c_str()) != 0) return fail(kJailStepPivot);
    if (::syscall(SYS_pivot_root, ".", ".") != 0) return fail(kJailStepPivot);
    if (::umount2(".", MNT_DETACH) != 0) return fail(kJailStepPivot);
    if (::chdir("/") != 0) return fail(kJailStepPivot);
    if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) !=
        0) {
      return fail(kJailStepReadOnlyRoot);
    }
  }
  if (c.no_new_privs) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(kJailStepNoNewPrivs);
    if (::geteuid() == 0) {
      for (int cap = 0; cap <= c.cap_last; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
          return fail(kJailStepCapabilities);
      }
    }
  }
  if (c.change_ids) {
    // setuid away from root clears the permitted and effective capabilities.
    // Raw system calls, not glibc's wrappers: in a child made by a raw
    // clone() of a threaded process, glibc still believes the parent's
    // threads exist and its setxid broadcast would wait for them forever.
    if (::syscall(SYS_setgroups, 0, nullptr) != 0) return fail(kJailStepIds);
    if (::syscall(SYS_setresgid, c.gid, c.gid, c.gid) != 0) return fail(kJailStepIds);
    if (::syscall(SYS_setresuid, c.uid, c.uid, c.uid) != 0) return fail(kJailStepIds);
  }
  return true;
}

int LastCapability() {
  auto text = ReadFile("/proc/sys/kernel/cap_last_cap", 64);
  if (!text.ok()) return 40;
  try {
    return std::stoi(*text);
  } catch (...) {
    return 40;
  }
}

}  // namespace vmf
