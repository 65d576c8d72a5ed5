#include "container_cgroup.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/fd.h"
#include "guest_ops.h"
#include "log.h"

namespace vmf::agent {
namespace {

constexpr const char* kV1Controllers[] = {"memory", "cpu", "cpuacct", "pids", "freezer"};
constexpr const char* kV2Controllers[] = {"memory", "cpu", "pids"};

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Reads at most 64 KiB of path.
bool ReadFile(const std::string& path, std::string* out) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  out->clear();
  char buf[4096];
  while (out->size() < 65536) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  return true;
}

Status Write(const std::string& path, const std::string& value) {
  Status st = WriteSmallFile(path, value);
  if (!st.ok()) return st.WithContext("cgroup: " + value);
  return st;
}

uint64_t ReadNumber(const std::string& path, bool* found = nullptr) {
  std::string s;
  bool ok = ReadSmallFile(path, &s);
  if (found != nullptr) *found = ok;
  if (!ok || s == "max") return 0;
  return std::strtoull(s.c_str(), nullptr, 10);
}

// The value of "key N" in a flat keyed file (memory.stat, cpu.stat).
uint64_t KeyedValue(const std::string& path, const std::string& key) {
  std::string text;
  if (!ReadFile(path, &text)) return 0;
  std::istringstream in(text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

// The path of our own cgroup in a hierarchy: the "0::" line (v2) or the line
// whose controller list has controller (v1). "" if none.
std::string SelfPath(const std::string& self_file, const std::string& controller) {
  std::string text;
  if (!ReadFile(self_file, &text)) return "";
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t a = line.find(':');
    size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string list = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controller.empty()) {
      if (list.empty() && line.compare(0, a, "0") == 0) return path;
      continue;
    }
    std::istringstream names(list);
    std::string name;
    while (std::getline(names, name, ','))
      if (name == controller) return path;
  }
  return "";
}

std::string Join(const std::string& base, const std::string& path) {
  std::string p = base;
  if (!path.empty() && path != "/") p += path;
  return p;
}

Status MakeDir(const std::string& dir, std::vector<std::string>* made) {
  if (::mkdir(dir.c_str(), 0755) == 0) {
    if (made != nullptr) made->push_back(dir);
    return OkStatus();
  }
  if (errno == EEXIST) return OkStatus();
  return ErrnoStatus(errno, "mkdir " + dir);
}

}  // namespace

ContainerCgroup& ContainerCgroup::operator=(ContainerCgroup&& o) noexcept {
  v2_ = o.v2_;
  dirs_ = std::move(o.dirs_);
  parents_ = std::move(o.parents_);
  o.dirs_.clear();
  o.parents_.clear();
  return *this;
}

Result<ContainerCgroup> ContainerCgroup::Create(const CgroupConfig& c, const std::string& id) {
  if (c.root.empty()) return Unavailable("cgroups are disabled");
  if (c.parent.empty() || c.parent.find('/') != std::string::npos)
    return InvalidArgument("bad cgroup parent");
  ContainerCgroup cg;
  if (Exists(c.root + "/cgroup.controllers")) {
    cg.v2_ = true;
    std::string self = Join(c.root, SelfPath(c.self_cgroup, ""));
    std::string parent = self + "/" + c.parent;
    // Hand the controllers down as far as we may (our own group can only if
    // it is the root or holds no process: the kernel says no otherwise).
    for (const char* ctl : kV2Controllers)
      (void)WriteSmallFile(self + "/cgroup.subtree_control", std::string("+") + ctl);
    VMF_RETURN_IF_ERROR(MakeDir(parent, nullptr));
    cg.parents_.push_back(parent);
    for (const char* ctl : kV2Controllers)
      (void)WriteSmallFile(parent + "/cgroup.subtree_control", std::string("+") + ctl);
    std::string dir = parent + "/" + id;
    VMF_RETURN_IF_ERROR(MakeDir(dir, nullptr));
    cg.dirs_.emplace_back("", dir);
    return cg;
  }
  std::vector<std::string> seen;
  for (const char* ctl : kV1Controllers) {
    std::string mount = c.root + "/" + ctl;
    if (!Exists(mount + "/cgroup.procs")) continue;
    char* real = ::realpath(mount.c_str(), nullptr);
    std::string real_mount = real != nullptr ? real : mount;
    ::free(real);
    std::string self = Join(mount, SelfPath(c.self_cgroup, ctl));
    std::string parent = self + "/" + c.parent;
    std::string dir = parent + "/" + id;
    bool shared = false;  // "cpu" and "cpuacct" are often one hierarchy
    for (const std::string& s : seen) shared = shared || s == real_mount;
    seen.push_back(real_mount);
    if (!shared) {
      Status st = MakeDir(parent, nullptr);
      if (st.ok()) st = MakeDir(dir, nullptr);
      if (!st.ok()) {
        cg.Remove();
        return st;
      }
      cg.parents_.push_back(parent);
    }
    cg.dirs_.emplace_back(ctl, dir);
  }
  if (cg.dirs_.empty()) return Unavailable("no cgroup hierarchy under " + c.root);
  return cg;
}

std::vector<std::string> ContainerCgroup::dirs() const {
  std::vector<std::string> d;
  for (const auto& [ctl, dir] : dirs_) d.push_back(dir);
  return d;
}

std::string ContainerCgroup::Describe() const {
  if (dirs_.empty()) return "no cgroup";
  std::string s = std::string(v2_ ? "cgroup v2 " : "cgroup v1 ") + dirs_.front().second;
  if (dirs_.size() > 1) s += " (+" + std::to_string(dirs_.size() - 1) + ")";
  return s;
}

std::string ContainerCgroup::Dir(const char* controller) const {
  for (const auto& [ctl, dir] : dirs_) {
    if (v2_) return dir;
    if (ctl == controller) return dir;
  }
  return "";
}

Status ContainerCgroup::Apply(const grpc::LinuxResources& r) {
  auto need = [this](const char* ctl, const char* file) -> Result<std::string> {
    std::string dir = Dir(ctl);
    if (dir.empty() || !Exists(dir + "/" + file))
      return FailedPrecondition(std::string("the cgroup controller ") + ctl + " is not available (" +
                                Describe() + ")");
    return dir;
  };
  if (r.has_memory() && r.memory().limit() != 0) {
    int64_t limit = r.memory().limit();
    if (v2_) {
      VMF_ASSIGN_OR_RETURN(std::string dir, need("memory", "memory.max"));
      VMF_RETURN_IF_ERROR(Write(dir + "/memory.max", limit < 0 ? "max" : std::to_string(limit)));
    } else {
      VMF_ASSIGN_OR_RETURN(std::string dir, need("memory", "memory.limit_in_bytes"));
      VMF_RETURN_IF_ERROR(Write(dir + "/memory.limit_in_bytes", limit < 0 ? "-1" : std::to_string(limit)));
    }
  }
  if (r.has_cpu()) {
    const grpc::LinuxCPU& cpu = r.cpu();
    if (cpu.shares() != 0) {
      if (v2_) {
        VMF_ASSIGN_OR_RETURN(std::string dir, need("cpu", "cpu.weight"));
        uint64_t shares = std::min<uint64_t>(std::max<uint64_t>(cpu.shares(), 2), 262144);
        VMF_RETURN_IF_ERROR(Write(dir + "/cpu.weight", std::to_string(1 + ((shares - 2) * 9999) / 262142)));
      } else {
        VMF_ASSIGN_OR_RETURN(std::string dir, need("cpu", "cpu.shares"));
        VMF_RETURN_IF_ERROR(Write(dir + "/cpu.shares", std::to_string(cpu.shares())));
      }
    }
    if (cpu.quota() != 0 || cpu.period() != 0) {
      if (v2_) {
        VMF_ASSIGN_OR_RETURN(std::string dir, need("cpu", "cpu.max"));
        std::string quota = cpu.quota() > 0 ? std::to_string(cpu.quota()) : "max";
        std::string value = quota;
        if (cpu.period() != 0) value += " " + std::to_string(cpu.period());
        if (cpu.quota() == 0) {  // only the period: keep the quota there is
          std::string cur;
          ReadSmallFile(dir + "/cpu.max", &cur);
          value = cur.substr(0, cur.find(' ')) + " " + std::to_string(cpu.period());
        }
        VMF_RETURN_IF_ERROR(Write(dir + "/cpu.max", value));
      } else {
        VMF_ASSIGN_OR_RETURN(std::string dir, need("cpu", "cpu.cfs_quota_us"));
        if (cpu.period() != 0)
          VMF_RETURN_IF_ERROR(Write(dir + "/cpu.cfs_period_us", std::to_string(cpu.period())));
        if (cpu.quota() != 0)
          VMF_RETURN_IF_ERROR(
              Write(dir + "/cpu.cfs_quota_us", cpu.quota() > 0 ? std::to_string(cpu.quota()) : "-1"));
      }
    }
  }
  if (r.has_pids() && r.pids().limit() != 0) {
    VMF_ASSIGN_OR_RETURN(std::string dir, need("pids", "pids.max"));
    VMF_RETURN_IF_ERROR(
        Write(dir + "/pids.max", r.pids().limit() > 0 ? std::to_string(r.pids().limit()) : "max"));
  }
  return OkStatus();
}

Status ContainerCgroup::AddProcess(pid_t pid) {
  std::vector<std::string> done;
  for (const auto& [ctl, dir] : dirs_) {
    bool dup = false;
    for (const std::string& d : done) dup = dup || d == dir;
    if (dup) continue;
    done.push_back(dir);
    VMF_RETURN_IF_ERROR(Write(dir + "/cgroup.procs", std::to_string(pid)));
  }
  return OkStatus();
}

Status ContainerCgroup::Freeze(bool frozen) {
  std::string dir = Dir("freezer");
  if (dir.empty() || !(v2_ ? Exists(dir + "/cgroup.freeze") : Exists(dir + "/freezer.state")))
    return Unavailable("no cgroup freezer for this container (" + Describe() + ")");
  if (v2_) {
    VMF_RETURN_IF_ERROR(Write(dir + "/cgroup.freeze", frozen ? "1" : "0"));
  } else {
    VMF_RETURN_IF_ERROR(Write(dir + "/freezer.state", frozen ? "FROZEN" : "THAWED"));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (true) {
    bool done = false;
    if (v2_) {
      std::string events;
      ReadFile(dir + "/cgroup.events", &events);
      done = events.find(frozen ? "frozen 1" : "frozen 0") != std::string::npos;
    } else {
      std::string state;
      ReadSmallFile(dir + "/freezer.state", &state);
      done = state == (frozen ? "FROZEN" : "THAWED");
    }
    if (done) return OkStatus();
    if (std::chrono::steady_clock::now() >= deadline)
      return DeadlineExceeded(std::string("the container's processes did not ") +
                              (frozen ? "freeze" : "thaw") + " within 2 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Result<grpc::CgroupStats> ContainerCgroup::Stats() const {
  if (dirs_.empty()) return Unavailable("the container has no cgroup");
  grpc::CgroupStats s;
  std::string mem = Dir("memory"), cpu = Dir("cpuacct"), pids = Dir("pids");
  if (v2_) cpu = Dir("cpu");
  grpc::MemoryStats* ms = s.mutable_memory_stats();
  grpc::MemoryData* mu = ms->mutable_usage();
  if (!mem.empty()) {
    if (v2_) {
      mu->set_usage(ReadNumber(mem + "/memory.current"));
      mu->set_max_usage(ReadNumber(mem + "/memory.peak"));
      mu->set_limit(ReadNumber(mem + "/memory.max"));
      mu->set_failcnt(KeyedValue(mem + "/memory.events", "max"));
      ms->set_cache(KeyedValue(mem + "/memory.stat", "file"));
    } else {
      mu->set_usage(ReadNumber(mem + "/memory.usage_in_bytes"));
      mu->set_max_usage(ReadNumber(mem + "/memory.max_usage_in_bytes"));
      uint64_t limit = ReadNumber(mem + "/memory.limit_in_bytes");
      mu->set_limit(limit >= (uint64_t{1} << 62) ? 0 : limit);  // the kernel's "no limit"
      mu->set_failcnt(ReadNumber(mem + "/memory.failcnt"));
      ms->set_cache(KeyedValue(mem + "/memory.stat", "cache"));
    }
  }
  grpc::CpuUsage* cu = s.mutable_cpu_stats()->mutable_cpu_usage();
  if (!cpu.empty()) {
    if (v2_) {
      cu->set_total_usage(KeyedValue(cpu + "/cpu.stat", "usage_usec") * 1000);
      cu->set_usage_in_usermode(KeyedValue(cpu + "/cpu.stat", "user_usec") * 1000);
      cu->set_usage_in_kernelmode(KeyedValue(cpu + "/cpu.stat", "system_usec") * 1000);
    } else {
      cu->set_total_usage(ReadNumber(cpu + "/cpuacct.usage"));
      std::string percpu;
      if (ReadFile(cpu + "/cpuacct.usage_percpu", &percpu)) {
        std::istringstream in(percpu);
        uint64_t v = 0;
        while (in >> v) cu->add_percpu_usage(v);
      }
      long hz = ::sysconf(_SC_CLK_TCK);
      uint64_t ns_per_tick = hz > 0 ? 1000000000ull / static_cast<uint64_t>(hz) : 10000000ull;
      cu->set_usage_in_usermode(KeyedValue(cpu + "/cpuacct.stat", "user") * ns_per_tick);
      cu->set_usage_in_kernelmode(KeyedValue(cpu + "/cpuacct.stat", "system") * ns_per_tick);
    }
  }
  if (!pids.empty()) {
    s.mutable_pids_stats()->set_current(ReadNumber(pids + "/pids.current"));
    s.mutable_pids_stats()->set_limit(ReadNumber(pids + "/pids.max"));
  }
  return s;
}

uint64_t ContainerCgroup::OomKills() const {
  std::string mem = Dir("memory");
  if (mem.empty()) return 0;
  return KeyedValue(mem + (v2_ ? "/memory.events" : "/memory.oom_control"), "oom_kill");
}

Result<UniqueFd> ContainerCgroup::OpenOomNotifier() const {
  std::string mem = Dir("memory");
  if (mem.empty()) return Unavailable("the container's cgroup has no memory controller");
  if (v2_) {
    // kernfs wakes poll() with POLLPRI when the file changes; a read re-arms it.
    UniqueFd fd(::open((mem + "/memory.events").c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return ErrnoStatus(errno, "cannot open " + mem + "/memory.events");
    DrainOomNotifier(fd.get());
    return fd;
  }
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!efd) return ErrnoStatus(errno, "eventfd");
  UniqueFd control(::open((mem + "/memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC));
  if (!control) return ErrnoStatus(errno, "cannot open " + mem + "/memory.oom_control");
  // The kernel keeps what it needs of control: it may be closed after this.
  VMF_RETURN_IF_ERROR(
      Write(mem + "/cgroup.event_control", std::to_string(efd.get()) + " " + std::to_string(control.get())));
  return efd;
}

void ContainerCgroup::DrainOomNotifier(int fd) const {
  char buf[512];
  if (v2_) {
    ::lseek(fd, 0, SEEK_SET);
    while (::read(fd, buf, sizeof(buf)) < 0 && errno == EINTR) {
    }
    return;
  }
  while (::read(fd, buf, 8) < 0 && errno == EINTR) {
  }
}

void ContainerCgroup::Remove() {
  std::vector<std::string> done;
  for (const auto& [ctl, dir] : dirs_) {
    bool dup = false;
    for (const std::string& d : done) dup = dup || d == dir;
    if (dup) continue;
    done.push_back(dir);
    // Tasks that just exited may still be counted for a moment.
    for (int attempt = 0;; ++attempt) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY || attempt >= 100) {
        Log("rmdir %s: %s", dir.c_str(), std::strerror(errno));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  for (const std::string& p : parents_) ::rmdir(p.c_str());  // only if empty: other containers keep it
  dirs_.clear();
  parents_.clear();
}

}  // namespace vmf::agent
