#include "common/scoped_dir.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

namespace vmf {

ScopedDir& ScopedDir::operator=(ScopedDir&& o) noexcept {
  if (this != &o) {
    Remove();
    path_ = std::exchange(o.path_, {});
  }
  return *this;
}

Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return InvalidArgument("empty directory path");
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    cur = dir.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus(errno, "mkdir " + cur);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + dir);
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(dir + " exists and is not a directory");
  return OkStatus();
}

Result<ScopedDir> ScopedDir::Create(const std::string& path, int mode) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) VMF_RETURN_IF_ERROR(MakeDirs(path.substr(0, slash)));
  if (::mkdir(path.c_str(), static_cast<mode_t>(mode)) != 0) return ErrnoStatus(errno, "mkdir " + path);
  ::chmod(path.c_str(), static_cast<mode_t>(mode));  // mkdir's mode is masked by umask
  return ScopedDir(path);
}

void ScopedDir::Remove() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  path_.clear();
}

}  // namespace vmf
