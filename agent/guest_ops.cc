#include "guest_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/fd.h"
#include "log.h"

namespace vmf::agent {

bool ReadSmallFile(const std::string& path, std::string* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  char buf[256];
  ssize_t n = 0;
  do {
    n = ::read(fd.get(), buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  if (n < 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  while (!out->empty() && (out->back() == '\n' || out->back() == ' ')) out->pop_back();
  return true;
}

Status WriteSmallFile(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  ssize_t n = 0;
  do {
    n = ::write(fd.get(), data.data(), data.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "write " + path);
  return OkStatus();
}

std::vector<std::string> NumberedEntries(const std::string& dir, std::string_view prefix) {
  std::vector<std::pair<unsigned long, std::string>> found;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return {};
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name(e->d_name);
    if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) continue;
    std::string_view num = name.substr(prefix.size());
    if (!std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    found.emplace_back(std::strtoul(std::string(num).c_str(), nullptr, 10), std::string(name));
  }
  ::closedir(d);
  std::sort(found.begin(), found.end());
  std::vector<std::string> names;
  names.reserve(found.size());
  for (auto& f : found) names.push_back(std::move(f.second));
  return names;
}

Status GuestOps::OnlineCpuMem(uint32_t nb_cpus, bool wait, bool cpu_only) const {
  const std::string cpu_dir = opt_.sysfs_root + "/devices/system/cpu";
  const std::string mem_dir = opt_.sysfs_root + "/devices/system/memory";
  uint32_t onlined = 0;
  const uint32_t want = nb_cpus;
  auto deadline = Clock::now() + opt_.online_wait;
  while (true) {
    for (const std::string& cpu : NumberedEntries(cpu_dir, "cpu")) {
      if (want != 0 && onlined >= want) break;
      std::string path = cpu_dir + "/" + cpu + "/online", state;
      if (!ReadSmallFile(path, &state) || state != "0") continue;
      Status st = WriteSmallFile(path, "1");
      if (st.ok()) {
        ++onlined;
      } else {
        Log("onlining %s: %s", cpu.c_str(), st.ToString().c_str());
      }
    }
    if (!cpu_only) {
      for (const std::string& mem : NumberedEntries(mem_dir, "memory")) {
        std::string path = mem_dir + "/" + mem + "/state", state;
        if (!ReadSmallFile(path, &state) || state != "offline") continue;
        Status st = WriteSmallFile(path, "online");
        if (!st.ok()) Log("onlining %s: %s", mem.c_str(), st.ToString().c_str());
      }
    }
    if (!wait || want == 0 || onlined >= want || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (wait && want != 0 && onlined < want)
    return DeadlineExceeded("onlined " + std::to_string(onlined) + " of " + std::to_string(want) + " CPUs");
  return OkStatus();
}

Status GuestOps::ReseedRandom(std::string_view data) const {
  if (data.empty()) return InvalidArgument("no seed data");
  UniqueFd fd(::open(opt_.random_device.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + opt_.random_device);
  std::vector<char> mem(sizeof(rand_pool_info) + data.size());
  auto* info = reinterpret_cast<rand_pool_info*>(mem.data());
  info->entropy_count = static_cast<int>(std::min<size_t>(data.size() * 8, 1u << 30));
  info->buf_size = static_cast<int>(data.size());
  std::memcpy(mem.data() + sizeof(rand_pool_info), data.data(), data.size());
  if (::ioctl(fd.get(), RNDADDENTROPY, info) != 0) return ErrnoStatus(errno, "RNDADDENTROPY");
  if (::ioctl(fd.get(), RNDRESEEDCRNG) != 0) return ErrnoStatus(errno, "RNDRESEEDCRNG");
  return OkStatus();
}

Status GuestOps::RenewIdentity() const {
  if (!opt_.allow_system_changes) return OkStatus();
  VMF_RETURN_IF_ERROR(WriteMachineId(opt_.machine_id_path, 0));
  std::string boot_id;
  if (!ReadSmallFile(opt_.boot_id_path, &boot_id)) return NotFound("cannot read " + opt_.boot_id_path);
  return OkStatus();
}

Status WriteMachineId(const std::string& path, unsigned getrandom_flags) {
  unsigned char raw[16];
  size_t got = 0;
  while (got < sizeof(raw)) {
    ssize_t n = ::getrandom(raw + got, sizeof(raw) - got, getrandom_flags);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && (getrandom_flags & GRND_INSECURE) != 0) {
      getrandom_flags &= ~GRND_INSECURE;  // a kernel before 5.6
      getrandom_flags |= GRND_NONBLOCK;
      continue;
    }
    if (n < 0) return ErrnoStatus(errno, "getrandom");
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string text;
  for (unsigned char c : raw) {
    text.push_back(hex[c >> 4]);
    text.push_back(hex[c & 15]);
  }
  text.push_back('\n');
  const std::string tmp = path + ".new";
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0444));
    if (!fd) return ErrnoStatus(errno, "create " + tmp);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      Status st = ErrnoStatus(errno, "write " + tmp);
      ::unlink(tmp.c_str());
      return st;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = ErrnoStatus(errno, "rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return st;
  }
  return OkStatus();
}

GuestOps::MemoryDetails GuestOps::Memory(bool want_block_size) const {
  MemoryDetails d;
  const std::string mem_dir = opt_.sysfs_root + "/devices/system/memory";
  if (want_block_size) {
    std::string text;
    if (ReadSmallFile(mem_dir + "/block_size_bytes", &text)) {
      d.block_size_bytes = std::strtoull(text.c_str(), nullptr, 16);
    } else {
      Log("cannot read %s/block_size_bytes", mem_dir.c_str());
    }
  }
  d.hotplug_probe = ::access((mem_dir + "/probe").c_str(), F_OK) == 0;
  return d;
}

Status GuestOps::SetClock(int64_t sec, int64_t usec) const {
  if (usec < 0 || usec >= 1000000 || sec < 0) return InvalidArgument("bad time");
  struct timeval tv;
  tv.tv_sec = static_cast<time_t>(sec);
  tv.tv_usec = static_cast<suseconds_t>(usec);
  if (!opt_.allow_system_changes) return OkStatus();
  if (::settimeofday(&tv, nullptr) != 0) return ErrnoStatus(errno, "settimeofday");
  return OkStatus();
}

Status GuestOps::SetHostname(std::string_view host) const {
  if (host.size() > 64 || host.find('\0') != std::string_view::npos)
    return InvalidArgument("bad hostname (at most 64 bytes)");
  if (!opt_.allow_system_changes) return OkStatus();
  if (!host.empty() && ::sethostname(host.data(), host.size()) != 0) return ErrnoStatus(errno, "sethostname");
  return OkStatus();
}

}  // namespace vmf::agent
