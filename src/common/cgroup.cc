#include "common/cgroup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/clock.h"
#include "common/io.h"
#include "common/log.h"

namespace vmf {
namespace fs = std::filesystem;
namespace {

constexpr const char* kParent = "vmfactory";
constexpr size_t kMaxControlFile = 64 * 1024;
constexpr uint64_t kCpuPeriodUs = 100000;
// v1 says "no limit" with a page-rounded LLONG_MAX.
constexpr uint64_t kV1Unlimited = uint64_t{1} << 62;

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  return out;
}

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  for (const auto& e : v) {
    if (e == x) return true;
  }
  return false;
}

struct Mount {
  std::string point;  // where it is mounted
  std::string root;   // which cgroup of the hierarchy is its root
  bool v2 = false;
  std::vector<std::string> options;  // v1: the controllers among the super options
};

// The cgroup file systems of /proc/self/mountinfo:
// "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - TYPE SOURCE SUPER_OPTS".
std::vector<Mount> CgroupMounts(const std::string& mountinfo) {
  std::vector<Mount> out;
  auto text = ReadFile(mountinfo, 4 << 20);
  if (!text.ok()) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> w;
    for (std::string x; f >> x;) w.push_back(x);
    size_t dash = 0;
    while (dash < w.size() && w[dash] != "-") ++dash;
    if (dash < 5 || dash + 3 > w.size()) continue;
    const std::string& type = w[dash + 1];
    if (type != "cgroup" && type != "cgroup2") continue;
    Mount m{.point = w[4], .root = w[3], .v2 = type == "cgroup2", .options = {}};
    if (dash + 3 <= w.size() && !m.v2) m.options = Split(w[dash + 3], ',');
    out.push_back(std::move(m));
  }
  return out;
}

// The dir of our cgroup `path` in a mount of its hierarchy ("" if the
// mount does not show it: a container sees only its own part).
std::string DirIn(const Mount& m, const std::string& path) {
  if (path.empty() || path[0] != '/') return "";
  const std::string root = m.root == "/" ? "" : m.root;
  if (path == root) return m.point;
  if (path.compare(0, root.size() + 1, root + "/") != 0) return "";
  std::string rel = path.substr(root.size());
  return rel == "/" ? m.point : m.point + rel;
}

Status WriteControl(const std::string& dir, const std::string& file, const std::string& value) {
  const std::string path = dir + "/" + file;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  ssize_t n = 0;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoStatus(errno, "write '" + value + "' to " + path);
  return OkStatus();
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// A number file ("123\n", v2's "max" is 0); 0 if it cannot be read.
uint64_t ReadNumber(const std::string& path) {
  auto text = ReadFile(path, kMaxControlFile);
  if (!text.ok()) return 0;
  if (text->rfind("max", 0) == 0) return 0;
  return std::strtoull(text->c_str(), nullptr, 10);
}

// The value of `key` in a "key value" lines file (memory.events,
// memory.oom_control, pids.events); 0 if absent.
uint64_t ReadKey(const std::string& path, const std::string& key) {
  auto text = ReadFile(path, kMaxControlFile);
  if (!text.ok()) return 0;
  std::istringstream in(*text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

std::string Mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// mkdir that is fine when the dir exists (the shared parent).
Status MakeCgroupDir(const std::string& path, bool may_exist) {
  if (::mkdir(path.c_str(), 0700) == 0) return OkStatus();
  if (errno == EEXIST && may_exist) return OkStatus();
  return ErrnoStatus(errno, "create cgroup " + path);
}

}  // namespace

std::string OwnCgroupPath(const std::string& controller, const CgroupSystem& sys) {
  auto text = ReadFile(sys.self_cgroup, kMaxControlFile);
  if (!text.ok()) return "";
  std::istringstream in(*text);
  std::string line;
  // "ID:CONTROLLERS:PATH"; v2's line is "0::PATH".
  while (std::getline(in, line)) {
    size_t a = line.find(':');
    size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1);
    bool match = controller.empty() ? ctrls.empty() : Contains(Split(ctrls, ','), controller);
    if (match) return line.substr(b + 1);
  }
  return "";
}

VmCgroup& VmCgroup::operator=(VmCgroup&& o) noexcept {
  if (this != &o) {
    Remove();
    name_ = std::move(o.name_);
    dirs_ = std::move(o.dirs_);
    limits_ = o.limits_;
    o.dirs_.clear();
  }
  return *this;
}

Result<std::vector<std::pair<VmCgroup::Kind, std::string>>> VmCgroup::Hierarchies(const CgroupSystem& sys) {
  const std::vector<Mount> mounts = CgroupMounts(sys.mountinfo);
  // Each hierarchy's dir for us: (kind, PARENT dir).
  std::vector<std::pair<Kind, std::string>> where;
  std::string v2_dir;
  for (const Mount& m : mounts) {
    if (!m.v2) continue;
    std::string d = DirIn(m, OwnCgroupPath("", sys));
    if (d.empty()) continue;
    auto ctrls = ReadFile(d + "/cgroup.controllers", kMaxControlFile);
    if (ctrls.ok() && Contains(Split(std::string(ctrls->substr(0, ctrls->find('\n'))), ' '), "memory")) {
      v2_dir = d;
      break;
    }
  }
  if (!v2_dir.empty()) {
    where.emplace_back(Kind::kV2, v2_dir);
  } else {
    const std::pair<Kind, const char*> wanted[] = {
        {Kind::kMemory, "memory"}, {Kind::kCpu, "cpu"}, {Kind::kPids, "pids"}};
    for (const auto& [kind, ctrl] : wanted) {
      for (const Mount& m : mounts) {
        if (m.v2 || !Contains(m.options, ctrl)) continue;
        std::string d = DirIn(m, OwnCgroupPath(ctrl, sys));
        if (!d.empty()) where.emplace_back(kind, d);
        break;
      }
    }
    if (where.empty() || where[0].first != Kind::kMemory) {
      return Unavailable(
          "no cgroup hierarchy with the memory controller for this process (neither v2 with memory "
          "enabled nor a v1 memory mount)");
    }
  }

  return where;
}

std::vector<std::string> VmCgroup::DirsFor(const std::string& name, const CgroupSystem& sys) {
  std::vector<std::string> out;
  auto where = Hierarchies(sys);
  if (!where.ok()) return out;
  for (const auto& [kind, own] : *where) {
    const std::string d = own + "/" + kParent + "/" + name;
    if (Exists(d)) out.push_back(d);
  }
  return out;
}

Result<VmCgroup> VmCgroup::Create(const std::string& name, const CgroupLimits& limits,
                                  const CgroupSystem& sys) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return InvalidArgument("cgroup name '" + name + "' is not a plain name");
  }
  VMF_ASSIGN_OR_RETURN(const auto where, Hierarchies(sys));
  VmCgroup cg;
  cg.name_ = name;
  for (const auto& [kind, own] : where) {
    const std::string parent = own + "/" + kParent;
    if (kind == Kind::kV2) {
      // Hand the controllers down: our cgroup to vmfactory/, vmfactory/ to
      // the VM's. A cgroup with processes of its own cannot (v2's rule),
      // unless it is the root.
      auto avail = ReadFile(own + "/cgroup.controllers", kMaxControlFile);
      std::string enable;
      for (const char* c : {"memory", "cpu", "pids"}) {
        if (avail.ok() && Contains(Split(avail->substr(0, avail->find('\n')), ' '), c)) {
          enable += std::string(enable.empty() ? "" : " ") + "+" + c;
        }
      }
      auto on = ReadFile(own + "/cgroup.subtree_control", kMaxControlFile);
      if (!on.ok() || on->find("memory") == std::string::npos) {
        Status st = WriteControl(own, "cgroup.subtree_control", enable);
        if (!st.ok()) {
          return Unavailable("cgroup v2: cannot enable the controllers below " + own + " (" + st.message() +
                             "; a cgroup with processes of its own cannot: run vmfactory in a cgroup "
                             "whose controllers are delegated to it)");
        }
      }
      Status st = MakeCgroupDir(parent, true);
      if (!st.ok()) return Unavailable(st.message());
      auto pon = ReadFile(parent + "/cgroup.subtree_control", kMaxControlFile);
      if (!pon.ok() || pon->find("memory") == std::string::npos) {
        st = WriteControl(parent, "cgroup.subtree_control", enable);
        if (!st.ok()) return Unavailable("cgroup v2: " + st.message());
      }
    } else {
      Status st = MakeCgroupDir(parent, true);
      if (!st.ok()) return Unavailable(st.message());
    }
    const std::string dir = parent + "/" + name;
    Status st = MakeCgroupDir(dir, false);
    if (!st.ok()) return st.code() == Code::kAlreadyExists ? st : Unavailable(st.message());
    cg.dirs_.push_back(Dir{.kind = kind, .path = dir, .procs = UniqueFd()});
    const std::string procs = dir + "/cgroup.procs";
    cg.dirs_.back().procs.reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!cg.dirs_.back().procs) return ErrnoStatus(errno, "open " + procs);
  }
  VMF_RETURN_IF_ERROR(cg.SetLimits(limits));
  return cg;
}

Result<VmCgroup> VmCgroup::Adopt(const std::string& name, const std::vector<std::string>& dirs) {
  VmCgroup cg;
  cg.name_ = name;
  for (const std::string& d : dirs) {
    const fs::path p(d);
    if (!p.is_absolute() || p.lexically_normal() != p || p.filename() != name ||
        p.parent_path().filename() != kParent) {
      return InvalidArgument("cgroup dir '" + d + "' is not an absolute, normal path ending in " + kParent +
                             "/" + name);
    }
    struct statfs sfs {};
    if (::statfs(d.c_str(), &sfs) != 0) return ErrnoStatus(errno, "cgroup dir " + d);
    Kind kind;
    if (sfs.f_type == CGROUP2_SUPER_MAGIC) {
      kind = Kind::kV2;
    } else if (sfs.f_type != CGROUP_SUPER_MAGIC) {
      return InvalidArgument("cgroup dir '" + d + "' is not on a cgroup file system");
    } else if (Exists(d + "/memory.limit_in_bytes")) {
      kind = Kind::kMemory;
    } else if (Exists(d + "/cpu.cfs_quota_us")) {
      kind = Kind::kCpu;
    } else if (Exists(d + "/pids.max")) {
      kind = Kind::kPids;
    } else {
      return InvalidArgument("cgroup dir '" + d + "' has none of the memory, cpu and pids controllers");
    }
    cg.dirs_.push_back(Dir{.kind = kind, .path = d, .procs = UniqueFd()});
    const std::string procs = d + "/cgroup.procs";
    cg.dirs_.back().procs.reset(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    if (!cg.dirs_.back().procs) return ErrnoStatus(errno, "open " + procs);
  }
  if (const Dir* m = cg.MemoryDir()) {
    const std::string file = m->path + (m->kind == Kind::kV2 ? "/memory.max" : "/memory.limit_in_bytes");
    uint64_t limit = ReadNumber(file);
    cg.limits_.memory_bytes = limit >= kV1Unlimited ? 0 : limit;
  }
  if (const Dir* p = cg.PidsDir()) cg.limits_.pids = static_cast<uint32_t>(ReadNumber(p->path + "/pids.max"));
  return cg;
}

std::vector<std::string> VmCgroup::dirs() const {
  std::vector<std::string> out;
  for (const Dir& d : dirs_) out.push_back(d.path);
  return out;
}

std::string VmCgroup::Describe() const {
  if (dirs_.empty()) return "no cgroup";
  std::string s = std::string(dirs_[0].kind == Kind::kV2 ? "cgroup v2 " : "cgroup v1 ") + dirs_[0].path;
  if (dirs_.size() > 1) s += " (+" + std::to_string(dirs_.size() - 1) + ")";
  return s;
}

std::vector<int> VmCgroup::procs_fds() const {
  std::vector<int> out;
  for (const Dir& d : dirs_) out.push_back(d.procs.get());
  return out;
}

const VmCgroup::Dir* VmCgroup::Find(Kind kind) const {
  for (const Dir& d : dirs_) {
    if (d.kind == kind || d.kind == Kind::kV2) return &d;
  }
  return nullptr;
}
const VmCgroup::Dir* VmCgroup::MemoryDir() const { return Find(Kind::kMemory); }
const VmCgroup::Dir* VmCgroup::PidsDir() const { return Find(Kind::kPids); }
const VmCgroup::Dir* VmCgroup::CpuDir() const { return Find(Kind::kCpu); }

Status VmCgroup::Join(pid_t pid) {
  const std::string s = std::to_string(pid);
  for (const Dir& d : dirs_) {
    ssize_t n = 0;
    do {
      n = ::write(d.procs.get(), s.data(), s.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoStatus(errno, "move pid " + s + " into cgroup " + d.path);
  }
  return OkStatus();
}

Status VmCgroup::SetLimits(const CgroupLimits& limits) {
  const std::string mem = limits.memory_bytes ? std::to_string(limits.memory_bytes) : "";
  const std::string pids = limits.pids ? std::to_string(limits.pids) : "max";
  const uint64_t quota =
      limits.cpus > 0 ? std::max<uint64_t>(1000, std::llround(limits.cpus * kCpuPeriodUs)) : 0;
  for (const Dir& d : dirs_) {
    switch (d.kind) {
      case Kind::kV2:
        VMF_RETURN_IF_ERROR(WriteControl(d.path, "memory.max", mem.empty() ? "max" : mem));
        // No swap: a guest over its limit is stopped, not swapped out.
        if (Exists(d.path + "/memory.swap.max")) {
          VMF_RETURN_IF_ERROR(WriteControl(d.path, "memory.swap.max", "0"));
        }
        if (Exists(d.path + "/cpu.max")) {
          VMF_RETURN_IF_ERROR(WriteControl(
              d.path, "cpu.max",
              (quota ? std::to_string(quota) : std::string("max")) + " " + std::to_string(kCpuPeriodUs)));
        }
        if (Exists(d.path + "/pids.max")) VMF_RETURN_IF_ERROR(WriteControl(d.path, "pids.max", pids));
        break;
      case Kind::kMemory: {
        // memory+swap must stay >= memory: raise it first, lower it last.
        const std::string v = mem.empty() ? "-1" : mem;
        const bool memsw = Exists(d.path + "/memory.memsw.limit_in_bytes");
        const uint64_t now = ReadNumber(d.path + "/memory.limit_in_bytes");
        const bool raising = mem.empty() || limits.memory_bytes > now;
        if (memsw && raising) VMF_RETURN_IF_ERROR(WriteControl(d.path, "memory.memsw.limit_in_bytes", v));
        VMF_RETURN_IF_ERROR(WriteControl(d.path, "memory.limit_in_bytes", v));
        if (memsw && !raising) VMF_RETURN_IF_ERROR(WriteControl(d.path, "memory.memsw.limit_in_bytes", v));
        break;
      }
      case Kind::kCpu:
        VMF_RETURN_IF_ERROR(WriteControl(d.path, "cpu.cfs_period_us", std::to_string(kCpuPeriodUs)));
        VMF_RETURN_IF_ERROR(
            WriteControl(d.path, "cpu.cfs_quota_us", quota ? std::to_string(quota) : std::string("-1")));
        break;
      case Kind::kPids:
        VMF_RETURN_IF_ERROR(WriteControl(d.path, "pids.max", pids));
        break;
    }
  }
  limits_ = limits;
  return OkStatus();
}

CgroupUsage VmCgroup::Usage() const { return UsageOf(dirs()); }

CgroupUsage VmCgroup::UsageOf(const std::vector<std::string>& dirs) {
  // Each dir is told apart by the files its controllers put there.
  CgroupUsage u;
  for (const std::string& d : dirs) {
    if (Exists(d + "/memory.current")) {  // v2
      u.memory_bytes = ReadNumber(d + "/memory.current");
      u.memory_peak_bytes = ReadNumber(d + "/memory.peak");
      u.memory_limit_bytes = ReadNumber(d + "/memory.max");
      u.oom_kills = ReadKey(d + "/memory.events", "oom_kill");
    } else if (Exists(d + "/memory.usage_in_bytes")) {  // v1 memory
      u.memory_bytes = ReadNumber(d + "/memory.usage_in_bytes");
      u.memory_peak_bytes = ReadNumber(d + "/memory.max_usage_in_bytes");
      u.memory_limit_bytes = ReadNumber(d + "/memory.limit_in_bytes");
      if (u.memory_limit_bytes >= kV1Unlimited) u.memory_limit_bytes = 0;
      u.oom_kills = ReadKey(d + "/memory.oom_control", "oom_kill");
    }
    if (Exists(d + "/pids.current")) u.pids = ReadNumber(d + "/pids.current");
  }
  return u;
}

std::optional<std::string> VmCgroup::LimitHit() const {
  if (dirs_.empty()) return std::nullopt;
  CgroupUsage u = Usage();
  if (u.oom_kills > 0) {
    return "killed by its cgroup's memory limit (" +
           Mib(u.memory_limit_bytes ? u.memory_limit_bytes : limits_.memory_bytes) + ")";
  }
  if (const Dir* p = PidsDir()) {
    if (ReadKey(p->path + "/pids.events", "max") > 0) {
      return "its cgroup's limit of " + std::to_string(limits_.pids) +
             " tasks refused it a new process or thread";
    }
  }
  return std::nullopt;
}

void VmCgroup::Remove() {
  if (dirs_.empty()) return;
  Deadline deadline(std::chrono::seconds(2));
  auto sleep = std::chrono::milliseconds(1);
  for (Dir& d : dirs_) {
    d.procs.reset();
    for (;;) {
      if (::rmdir(d.path.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY || deadline.expired()) {
        spdlog::warn("cannot remove cgroup {}: {} (tasks: {})", d.path, std::strerror(errno),
                     TailOfFile(d.path + "/cgroup.procs", 200));
        break;
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::milliseconds(20));
    }
  }
  dirs_.clear();
}

std::vector<std::string> VmCgroup::Release() {
  std::vector<std::string> out = dirs();
  dirs_.clear();
  return out;
}

}  // namespace vmf
