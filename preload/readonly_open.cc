// libvmf-readonly-open.so: preloaded into a clone's QEMU (LD_PRELOAD), it
// turns a read-write open of a file listed in VMF_READONLY_FILES (paths
// separated by ':') into a read-only one. QEMU 7.2 opens a
// memory-backend-file O_RDWR even with share=off, where it only maps the
// file privately (copy-on-write), so read access is all it needs. The
// jailed QEMU can then map the template's RAM file without any way to
// write it: the file is root's, mode 0444, on a read-only bind mount.
// Every other open is passed through unchanged.
#include <dlfcn.h>
#include <fcntl.h>

#include <cstdarg>
#include <cstdlib>
#include <cstring>

namespace {

bool Listed(const char* path) {
  const char* list = std::getenv("VMF_READONLY_FILES");
  if (list == nullptr || path == nullptr) return false;
  const size_t n = std::strlen(path);
  for (const char* s = list; *s != '\0';) {
    const char* end = std::strchr(s, ':');
    const size_t len = end ? static_cast<size_t>(end - s) : std::strlen(s);
    if (len == n && std::memcmp(s, path, n) == 0) return true;
    if (end == nullptr) break;
    s = end + 1;
  }
  return false;
}

int Adjust(const char* path, int flags) {
  if ((flags & O_ACCMODE) == O_RDWR && (flags & (O_CREAT | O_TRUNC)) == 0 && Listed(path)) {
    return (flags & ~O_ACCMODE) | O_RDONLY;
  }
  return flags;
}

template <typename Fn>
Fn Next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

mode_t ModeArg(int flags, va_list ap) {
  return (flags & (O_CREAT | O_TMPFILE)) != 0 ? static_cast<mode_t>(va_arg(ap, int)) : 0;
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  static auto next = Next<int (*)(const char*, int, ...)>("open");
  va_list ap;
  va_start(ap, flags);
  mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return next(path, Adjust(path, flags), mode);
}

int open64(const char* path, int flags, ...) {
  static auto next = Next<int (*)(const char*, int, ...)>("open64");
  va_list ap;
  va_start(ap, flags);
  mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return next(path, Adjust(path, flags), mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
  static auto next = Next<int (*)(int, const char*, int, ...)>("openat");
  va_list ap;
  va_start(ap, flags);
  mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return next(dirfd, path, path && path[0] == '/' ? Adjust(path, flags) : flags, mode);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  static auto next = Next<int (*)(int, const char*, int, ...)>("openat64");
  va_list ap;
  va_start(ap, flags);
  mode_t mode = ModeArg(flags, ap);
  va_end(ap);
  return next(dirfd, path, path && path[0] == '/' ? Adjust(path, flags) : flags, mode);
}

// The fortified entry points (_FORTIFY_SOURCE), which QEMU's build uses.
int __open_2(const char* path, int flags) {
  static auto next = Next<int (*)(const char*, int)>("__open_2");
  return next(path, Adjust(path, flags));
}

int __open64_2(const char* path, int flags) {
  static auto next = Next<int (*)(const char*, int)>("__open64_2");
  return next(path, Adjust(path, flags));
}

}  // extern "C"
