#include "common/io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace vmf {
namespace {

Result<sockaddr_un> UnixAddr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return InvalidArgument("unix socket path '" + path + "' is empty or longer than " +
                           std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Status PollFor(int fd, short events, const Deadline& deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, deadline.remaining_ms());
    if (r > 0) return OkStatus();
    if (r == 0) return DeadlineExceeded("timed out waiting for I/O");
    if (errno != EINTR) return ErrnoStatus(errno, "poll");
  }
}

}  // namespace

Result<UniqueFd> ConnectUnix(const std::string& path) {
  VMF_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddr(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, "connect " + path);
  }
  return fd;
}

Result<UniqueFd> ConnectUnixUntil(const std::string& path, const Deadline& deadline) {
  for (;;) {
    auto fd = ConnectUnix(path);
    if (fd.ok() || deadline.expired()) return fd;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Result<UniqueFd> ListenUnix(const std::string& path, int backlog) {
  VMF_ASSIGN_OR_RETURN(sockaddr_un addr, UnixAddr(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus(errno, "socket");
  // The mode is set through fchmod before bind so that the socket file is
  // never reachable by others, even for an instant.
  if (::fchmod(fd.get(), 0600) != 0) return ErrnoStatus(errno, "fchmod socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(errno, "bind " + path);
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), backlog) != 0) return ErrnoStatus(errno, "listen " + path);
  return fd;
}

Status WriteAll(int fd, std::string_view data, const Deadline& deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      VMF_RETURN_IF_ERROR(PollFor(fd, POLLOUT, deadline));
      continue;
    }
    return ErrnoStatus(n < 0 ? errno : EPIPE, "write");
  }
  return OkStatus();
}

Status WaitReadable(int fd, const Deadline& deadline) { return PollFor(fd, POLLIN, deadline); }

Status ReadExact(int fd, size_t n, std::string* out, const Deadline& deadline) {
  size_t start = out->size();
  out->resize(start + n);
  size_t got = 0;
  while (got < n) {
    VMF_RETURN_IF_ERROR(PollFor(fd, POLLIN, deadline));
    ssize_t r = ::read(fd, out->data() + start + got, n - got);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r == 0) {
      out->resize(start + got);
      return Unavailable("connection closed by peer");
    } else if (errno != EINTR && errno != EAGAIN) {
      out->resize(start + got);
      return ErrnoStatus(errno, "read");
    }
  }
  return OkStatus();
}

Status SetNonBlocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus(errno, "fcntl F_GETFL");
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, flags) != 0) return ErrnoStatus(errno, "fcntl F_SETFL");
  return OkStatus();
}

Result<std::string> ReadFilePrefix(const std::string& path, size_t n) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    ssize_t r = ::read(fd.get(), buf, std::min(sizeof(buf), n - out.size()));
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read " + path);
    }
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  VMF_ASSIGN_OR_RETURN(std::string out, ReadFilePrefix(path, std::max(max_bytes, max_bytes + 1)));
  if (out.size() > max_bytes) {
    return ResourceExhausted(path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  return out;
}

std::string TailOfFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return "";
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  if (size < 0) return "";
  off_t from = size > static_cast<off_t>(max_bytes) ? size - static_cast<off_t>(max_bytes) : 0;
  std::string out(static_cast<size_t>(size - from), '\0');
  ssize_t r = ::pread(fd.get(), out.data(), out.size(), from);
  out.resize(r > 0 ? static_cast<size_t>(r) : 0);
  return out;
}

Status WriteFileAtomic(const std::string& path, std::string_view data, int mode) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return ErrnoStatus(errno, "create " + tmp);
  // Exactly `mode`: neither the umask nor an earlier file of that name
  // changes it (a 0444 file others must read stays readable under umask 077).
  Status st =
      ::fchmod(fd.get(), static_cast<mode_t>(mode)) == 0 ? OkStatus() : ErrnoStatus(errno, "chmod " + tmp);
  if (st.ok()) st = WriteAll(fd.get(), data, Deadline(std::chrono::seconds(30)));
  if (st.ok() && ::fsync(fd.get()) != 0) st = ErrnoStatus(errno, "fsync " + tmp);
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoStatus(errno, "rename " + tmp);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st.WithContext(st.ok() ? "" : "write " + path);
}

Status CopyToEnd(int in, int out, const std::string& what) {
  for (;;) {
    ssize_t n = ::sendfile(out, in, nullptr, 1 << 30);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, what);
    if (n == 0) return OkStatus();
  }
}

}  // namespace vmf
