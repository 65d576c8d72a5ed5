// ScopedDir: a directory we created, removed with its contents when the
// owner is destroyed (unless released).
#pragma once

#include <string>

#include "common/status.h"

namespace vmf {

class ScopedDir {
 public:
  ScopedDir() = default;
  ScopedDir(ScopedDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ScopedDir& operator=(ScopedDir&& o) noexcept;
  ScopedDir(const ScopedDir&) = delete;
  ScopedDir& operator=(const ScopedDir&) = delete;
  ~ScopedDir() { Remove(); }

  // Creates path (which must not exist) with the given mode; parents are
  // created 0700 as needed.
  static Result<ScopedDir> Create(const std::string& path, int mode = 0700);

  // Takes ownership of an existing directory (handed over by another process).
  static ScopedDir Adopt(std::string path) { return ScopedDir(std::move(path)); }

  const std::string& path() const { return path_; }
  bool valid() const { return !path_.empty(); }
  void Remove();
  std::string Release() { return std::exchange(path_, {}); }

 private:
  explicit ScopedDir(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

// Creates dir and missing parents with mode 0700; an existing dir is fine.
Status MakeDirs(const std::string& dir);

}  // namespace vmf
