#include "common/scoped.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace vmf {

ScopedSymlink& ScopedSymlink::operator=(ScopedSymlink&& o) noexcept {
  if (this != &o) {
    Remove();
    path_ = std::exchange(o.path_, {});
    target_ = std::exchange(o.target_, {});
  }
  return *this;
}

Result<ScopedSymlink> ScopedSymlink::Create(const std::string& target, const std::string& path) {
  // Replace what an earlier owner left, but never something that is not a
  // link: only an old link may be removed.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISLNK(st.st_mode)) return AlreadyExists(path + " exists and is not a link");
    ::unlink(path.c_str());
  }
  if (::symlink(target.c_str(), path.c_str()) != 0) return ErrnoStatus(errno, "symlink " + path);
  return ScopedSymlink(path, target);
}

void ScopedSymlink::Remove() {
  if (path_.empty()) return;
  std::vector<char> buf(target_.size() + 2);
  ssize_t n = ::readlink(path_.c_str(), buf.data(), buf.size());
  if (n >= 0 && std::string(buf.data(), static_cast<size_t>(n)) == target_) ::unlink(path_.c_str());
  path_.clear();
  target_.clear();
}

ScopedMount& ScopedMount::operator=(ScopedMount&& o) noexcept {
  if (this != &o) {
    Unmount();
    dir_ = std::exchange(o.dir_, {});
  }
  return *this;
}

Result<ScopedMount> ScopedMount::Mount(const std::string& source, const std::string& dir,
                                       const std::string& type, unsigned long flags,
                                       const std::string& data) {
  if (::mount(source.c_str(), dir.c_str(), type.c_str(), flags, data.c_str()) != 0) {
    return ErrnoStatus(errno, "mount " + type + " at " + dir);
  }
  return ScopedMount(dir);
}

void ScopedMount::Unmount() {
  if (dir_.empty()) return;
  ::umount2(dir_.c_str(), MNT_DETACH);
  dir_.clear();
}

ScopedTempFile& ScopedTempFile::operator=(ScopedTempFile&& o) noexcept {
  if (this != &o) {
    Discard();
    path_ = std::exchange(o.path_, {});
    fd_ = std::move(o.fd_);
  }
  return *this;
}

Result<ScopedTempFile> ScopedTempFile::Create(const std::string& path, int mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return ErrnoStatus(errno, "create " + path);
  return ScopedTempFile(path, std::move(fd));
}

Status ScopedTempFile::Commit(const std::string& dest) {
  if (path_.empty()) return FailedPrecondition("commit " + dest + ": nothing was written");
  if (::fsync(fd_.get()) != 0) return ErrnoStatus(errno, "fsync " + path_);
  fd_.reset();
  if (::rename(path_.c_str(), dest.c_str()) != 0)
    return ErrnoStatus(errno, "rename " + path_ + " to " + dest);
  path_.clear();
  return OkStatus();
}

void ScopedTempFile::Discard() {
  fd_.reset();
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace vmf
