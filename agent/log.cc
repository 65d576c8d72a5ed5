#include "log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>

namespace vmf::agent {
namespace {
bool g_enabled = true;
}  // namespace

void SetLogEnabled(bool enabled) { g_enabled = enabled; }

void Log(const char* fmt, ...) {
  if (!g_enabled) return;
  int saved_errno = errno;
  char buf[1024];
  static constexpr char kPrefix[] = "vmfactory-agent: ";
  size_t n = sizeof(kPrefix) - 1;
  __builtin_memcpy(buf, kPrefix, n);
  va_list ap;
  va_start(ap, fmt);
  // ap is started just above; clang-analyzer 14 loses track of va_start here.
  // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
  int m = std::vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  n += static_cast<size_t>(m) < sizeof(buf) - n - 1 ? static_cast<size_t>(m) : sizeof(buf) - n - 2;
  buf[n++] = '\n';
  const char* p = buf;
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    p += w;
    n -= static_cast<size_t>(w);
  }
  errno = saved_errno;
}

}  // namespace vmf::agent
