// Small, bounded I/O helpers over raw fds and unix sockets.
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf {

// Connects a SOCK_STREAM unix socket (CLOEXEC) to path; fails at once if
// nobody listens.
Result<UniqueFd> ConnectUnix(const std::string& path);
// Retries ConnectUnix until it succeeds or the deadline passes.
Result<UniqueFd> ConnectUnixUntil(const std::string& path, const Deadline& deadline);
// Creates, binds and listens on a unix socket at path with mode 0600.
Result<UniqueFd> ListenUnix(const std::string& path, int backlog = 64);

// Writes all of data, waiting at most until the deadline.
Status WriteAll(int fd, std::string_view data, const Deadline& deadline);
// Reads exactly n bytes into out (appending), waiting at most until the deadline.
// EOF before n bytes is UNAVAILABLE.
Status ReadExact(int fd, size_t n, std::string* out, const Deadline& deadline);
// Waits until fd is readable; DEADLINE_EXCEEDED on timeout.
Status WaitReadable(int fd, const Deadline& deadline);

Status SetNonBlocking(int fd, bool on);

// Copies the rest of the regular file open as `in` into `out`, to its end
// (sendfile). `what` names the copy in an error.
Status CopyToEnd(int in, int out, const std::string& what);

// Reads a whole (small) file; refuses files larger than max_bytes.
Result<std::string> ReadFile(const std::string& path, size_t max_bytes = 1 << 20);
// The first n bytes of a file (all of it if it is shorter).
Result<std::string> ReadFilePrefix(const std::string& path, size_t n);
// Last max_bytes of a file, or "" if it cannot be read. For error messages.
std::string TailOfFile(const std::string& path, size_t max_bytes = 2048);
// Writes data to path atomically (tmp + rename) with exactly the given mode
// (whatever the umask).
Status WriteFileAtomic(const std::string& path, std::string_view data, int mode = 0600);

}  // namespace vmf
