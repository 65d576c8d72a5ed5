#include "init.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "guest_ops.h"
#include "log.h"
#include "spawn.h"

namespace vmf::agent {
namespace {

void MountOne(const char* source, const char* target, const char* fstype, unsigned long flags,
              const char* data) {
  if (::mkdir(target, 0755) != 0 && errno != EEXIST) {
    Log("mkdir %s: %s", target, std::strerror(errno));
  }
  if (::mount(source, target, fstype, flags, data) != 0 && errno != EBUSY) {
    Log("mount %s on %s: %s", fstype, target, std::strerror(errno));
  }
}

bool ReadFile(const std::string& path, std::string* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  out->clear();
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->append(buf, static_cast<size_t>(n));
    if (out->size() > (1u << 20)) return true;  // no list is this long
  }
}

std::string Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

double SecondsSinceBoot() {
  struct timespec ts;
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void MountFilesystems() {
  const unsigned long kSafe = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  MountOne("proc", "/proc", "proc", kSafe, nullptr);
  MountOne("sysfs", "/sys", "sysfs", kSafe, nullptr);
  MountOne("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  MountOne("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
  MountOne("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  MountOne("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  MountOne("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  // The containers' cgroups (container_cgroup.h); the controllers are
  // enabled when the first container is made, not at every boot.
  MountOne("cgroup2", "/sys/fs/cgroup", "cgroup2", kSafe, nullptr);
}

void EnsureStdFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) continue;
    int opened = ::open("/dev/console", O_RDWR | O_NOCTTY);
    if (opened < 0) opened = ::open("/dev/null", O_RDWR);
    if (opened < 0) continue;
    if (opened != fd) {
      ::dup2(opened, fd);
      ::close(opened);
    }
  }
}

int LoadModules(const std::string& list_file, const std::string& root) {
  std::string text;
  if (!ReadFile(list_file, &text)) {
    if (errno != ENOENT) Log("reading %s: %s", list_file.c_str(), std::strerror(errno));
    return 0;
  }
  int loaded = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::string line = Trim(std::string_view(text).substr(start, nl - start));
    start = nl + 1;
    if (line.empty() || line[0] == '#') continue;
    std::string path = root;
    if (path.empty() || path.back() != '/') path += '/';
    path += line[0] == '/' ? line.substr(1) : line;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      Log("module %s: %s", path.c_str(), std::strerror(errno));
      continue;
    }
    if (::syscall(SYS_finit_module, fd.get(), "", 0) != 0) {
      if (errno != EEXIST) Log("finit_module %s: %s", path.c_str(), std::strerror(errno));
      continue;
    }
    ++loaded;
  }
  return loaded;
}

Status BringUpLoopback() {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return ErrnoStatus(errno, "socket");
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return ErrnoStatus(errno, "SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return ErrnoStatus(errno, "SIOCSIFFLAGS lo");
  return OkStatus();
}

void InitGuest(bool pid1) {
  if (pid1) {
    MountFilesystems();
    EnsureStdFds();
    ::umask(022);
  }
  ::setenv("PATH", kDefaultPath, 1);
  if (pid1) {
    if (::getenv("HOME") == nullptr) ::setenv("HOME", "/root", 1);
    int n = LoadModules(kModulesList, "/");
    Log("loaded %d kernel modules (%.3f s since boot)", n, SecondsSinceBoot());
    // A machine-id for a cold boot; a clone gets its own at the reseed.
    ::mkdir("/etc", 0755);
    Status st = WriteMachineId("/etc/machine-id", GRND_INSECURE);
    if (!st.ok()) Log("machine-id: %s", st.ToString().c_str());
    // Containers share the VM's network namespace: 127.0.0.1 must work.
    st = BringUpLoopback();
    if (!st.ok()) Log("loopback: %s", st.ToString().c_str());
  }
}

std::string ReadCmdline() {
  std::ifstream f("/proc/cmdline");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string CmdlineValue(std::string_view cmdline, std::string_view key) {
  constexpr std::string_view kSpace = " \n\t";
  std::string result;
  size_t i = cmdline.find_first_not_of(kSpace);
  while (i != std::string_view::npos) {
    size_t j = std::min(cmdline.find_first_of(kSpace, i), cmdline.size());
    std::string_view word = cmdline.substr(i, j - i);
    if (word.size() > key.size() && word.substr(0, key.size()) == key && word[key.size()] == '=') {
      result = word.substr(key.size() + 1);
    }
    i = cmdline.find_first_not_of(kSpace, j);
  }
  return result;
}

std::string PortNameFromCmdline(std::string_view cmdline, std::string_view default_name) {
  std::string name = CmdlineValue(cmdline, "vmf.port");
  return name.empty() ? std::string(default_name) : name;
}

Result<std::string> FindPortDevice(const std::string& ports_dir, const std::string& name) {
  DIR* d = ::opendir(ports_dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir " + ports_dir);
  std::string found;
  while (struct dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string port_name;
    if (!ReadFile(ports_dir + "/" + e->d_name + "/name", &port_name)) continue;
    if (Trim(port_name) == name) {
      found = e->d_name;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) return NotFound("no virtio port named " + name + " in " + ports_dir);
  return found;
}

Result<UniqueFd> OpenAgentPort(const std::string& ports_dir, const std::string& dev_dir,
                               const std::string& name, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  Status last = NotFound("no virtio port named " + name);
  while (true) {
    Result<std::string> dev = FindPortDevice(ports_dir, name);
    if (dev.ok()) {
      std::string path = dev_dir + "/" + *dev;
      int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      if (fd >= 0) {
        Log("found port %s at %s (%.3f s since boot)", name.c_str(), path.c_str(), SecondsSinceBoot());
        return UniqueFd(fd);
      }
      last = ErrnoStatus(errno, "open " + path);
      if (errno != ENOENT) return last;  // e.g. EBUSY: opened elsewhere
    } else {
      last = dev.status();
    }
    if (std::chrono::steady_clock::now() >= deadline) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace vmf::agent
