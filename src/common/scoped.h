// Scope owners for the lifetimes that are not an fd, a process or a dir:
// each undoes what it stands for when destroyed, unless released.
//
//   Cleanup undo([&] { ::unlink(path); });   ... undo.Cancel();
//   ScopedCancelAction kill(token, [pid] { ::kill(pid, SIGKILL); });
//   VMF_ASSIGN_OR_RETURN(auto link, ScopedSymlink::Create(target, path));
//   VMF_ASSIGN_OR_RETURN(auto tmp, ScopedTempFile::Create(dest + ".tmp", 0600));
//   write tmp.fd() ...; VMF_RETURN_IF_ERROR(tmp.Commit(dest));
//   ScopedMount m = ScopedMount::Adopt(dir);  // unmounted (lazily) at scope end
#pragma once

#include <functional>
#include <string>
#include <utility>

#include "common/cancel.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf {

// Runs a function at scope end unless cancelled (absl::Cleanup's job).
class Cleanup {
 public:
  explicit Cleanup(std::function<void()> fn) : fn_(std::move(fn)) {}
  Cleanup(Cleanup&& o) noexcept : fn_(std::exchange(o.fn_, nullptr)) {}
  Cleanup& operator=(Cleanup&&) = delete;
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  ~Cleanup() {
    if (fn_) fn_();
  }
  void Cancel() { fn_ = nullptr; }

 private:
  std::function<void()> fn_;
};

// An action registered on a CancelToken for as long as the owner lives.
class ScopedCancelAction {
 public:
  ScopedCancelAction() = default;
  // A null token registers nothing.
  ScopedCancelAction(CancelToken* token, std::function<void()> action) : token_(token) {
    if (token_) handle_ = token_->OnCancel(std::move(action));
  }
  ScopedCancelAction(ScopedCancelAction&& o) noexcept
      : token_(std::exchange(o.token_, nullptr)), handle_(o.handle_) {}
  ScopedCancelAction& operator=(ScopedCancelAction&& o) noexcept {
    if (this != &o) {
      Reset();
      token_ = std::exchange(o.token_, nullptr);
      handle_ = o.handle_;
    }
    return *this;
  }
  ScopedCancelAction(const ScopedCancelAction&) = delete;
  ScopedCancelAction& operator=(const ScopedCancelAction&) = delete;
  ~ScopedCancelAction() { Reset(); }

  bool active() const { return token_ != nullptr; }
  // Unregisters the action now.
  void Reset() {
    if (token_) token_->Remove(handle_);
    token_ = nullptr;
  }

 private:
  CancelToken* token_ = nullptr;
  int handle_ = 0;
};

// A symbolic link we made, removed when the owner goes (if it is still ours:
// a link that another owner has since replaced is left alone).
class ScopedSymlink {
 public:
  ScopedSymlink() = default;
  ScopedSymlink(ScopedSymlink&& o) noexcept
      : path_(std::exchange(o.path_, {})), target_(std::exchange(o.target_, {})) {}
  ScopedSymlink& operator=(ScopedSymlink&& o) noexcept;
  ScopedSymlink(const ScopedSymlink&) = delete;
  ScopedSymlink& operator=(const ScopedSymlink&) = delete;
  ~ScopedSymlink() { Remove(); }

  // Creates path -> target. A link already at path is replaced; anything
  // else there is ALREADY_EXISTS.
  static Result<ScopedSymlink> Create(const std::string& target, const std::string& path);

  const std::string& path() const { return path_; }
  bool valid() const { return !path_.empty(); }
  void Remove();
  std::string Release() {
    target_.clear();
    return std::exchange(path_, {});
  }

 private:
  ScopedSymlink(std::string path, std::string target) : path_(std::move(path)), target_(std::move(target)) {}
  std::string path_;
  std::string target_;
};

// A mount point we mounted, unmounted (MNT_DETACH) when the owner goes.
class ScopedMount {
 public:
  ScopedMount() = default;
  ScopedMount(ScopedMount&& o) noexcept : dir_(std::exchange(o.dir_, {})) {}
  ScopedMount& operator=(ScopedMount&& o) noexcept;
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;
  ~ScopedMount() { Unmount(); }

  // mount(2) of a filesystem of `type` on dir with `data` options.
  static Result<ScopedMount> Mount(const std::string& source, const std::string& dir, const std::string& type,
                                   unsigned long flags, const std::string& data);
  static ScopedMount Adopt(std::string dir) { return ScopedMount(std::move(dir)); }

  const std::string& dir() const { return dir_; }
  bool valid() const { return !dir_.empty(); }
  void Unmount();
  std::string Release() { return std::exchange(dir_, {}); }

 private:
  explicit ScopedMount(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// A file written under a temporary name: Commit() renames it into place
// (after fsync); otherwise it is removed when the owner goes.
class ScopedTempFile {
 public:
  ScopedTempFile() = default;
  ScopedTempFile(ScopedTempFile&& o) noexcept : path_(std::exchange(o.path_, {})), fd_(std::move(o.fd_)) {}
  ScopedTempFile& operator=(ScopedTempFile&& o) noexcept;
  ScopedTempFile(const ScopedTempFile&) = delete;
  ScopedTempFile& operator=(const ScopedTempFile&) = delete;
  ~ScopedTempFile() { Discard(); }

  // Creates (truncating) path for writing with the given mode.
  static Result<ScopedTempFile> Create(const std::string& path, int mode = 0600);

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // fsync, close and rename onto dest; the owner is empty afterwards.
  Status Commit(const std::string& dest);
  void Discard();

 private:
  ScopedTempFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
};

}  // namespace vmf
