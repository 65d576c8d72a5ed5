#include "common/census.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/io.h"
#include "common/process.h"
#include "common/procfs.h"

namespace vmf {
namespace fs = std::filesystem;

namespace {

// Ours: running as we do, or, when we are root, as anyone, since VMs we
// start run as uids of their own (the command line identifies them).
bool Ours(uid_t uid) { return ::geteuid() == 0 || uid == ::geteuid(); }

template <typename Fn>
void ForEachOwnProcess(Fn fn) {
  for (const ProcEntry& p : ListProcesses()) {
    if (!Ours(p.uid)) continue;
    auto argv = ProcessArgv(p.pid);
    if (argv.empty()) continue;
    fn(p.pid, argv);
  }
}

bool Mentions(const std::vector<std::string>& argv, const std::string& needle) {
  for (const auto& a : argv) {
    if (a.find(needle) != std::string::npos) return true;
  }
  return false;
}

int CountEntries(const fs::path& dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

}  // namespace

std::string HostCensus::ToString() const {
  std::ostringstream o;
  o << "qemu=" << qemu << " proxies=" << proxies << " sockets=" << sockets << " vm_dirs=" << vm_dirs
    << " mounts=" << mounts;
  if (fds >= 0) o << " fds=" << fds;
  return o.str();
}

std::vector<pid_t> ProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> out;
  ForEachOwnProcess([&](pid_t pid, const std::vector<std::string>& argv) {
    if (pid != ::getpid() && Mentions(argv, needle)) out.push_back(pid);
  });
  return out;
}

pid_t FindProcessMentioningAll(const std::vector<std::string>& needles) {
  for (const ProcEntry& p : ListProcesses()) {
    const std::vector<std::string> argv = ProcessArgv(p.pid);
    bool all = !argv.empty();
    for (const auto& n : needles) all = all && Mentions(argv, n);
    if (all && p.pid != ::getpid()) return p.pid;
  }
  return -1;
}

bool ProcessMentions(pid_t pid, const std::string& needle) {
  if (pid <= 0 || needle.empty()) return false;
  fs::path dir = "/proc/" + std::to_string(pid);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !Ours(st.st_uid)) return false;
  return Mentions(ProcessArgv(pid), needle);
}

void StopProcessesMentioning(const std::string& needle, std::chrono::milliseconds grace) {
  // A short needle would match far more than one VM's processes.
  if (needle.size() < 16) return;
  for (pid_t pid : ProcessesMentioning(needle)) ChildProcess::Adopt(pid).Stop(grace);
}

int CountFds(pid_t pid) {
  std::error_code ec;
  fs::path dir = "/proc/" + std::to_string(pid) + "/fd";
  if (!fs::exists(dir, ec)) return -1;
  return CountEntries(dir);
}

HostCensus TakeCensus(const std::string& runtime_dir, pid_t fds_of) {
  HostCensus c;
  ForEachOwnProcess([&](pid_t, const std::vector<std::string>& argv) {
    if (!Mentions(argv, runtime_dir)) return;
    const std::string prog = fs::path(argv[0]).filename();
    if (prog.rfind("qemu-system", 0) == 0) ++c.qemu;
    if (prog == "vmfactory-proxy") ++c.proxies;
  });
  std::error_code ec;
  for (auto it =
           fs::recursive_directory_iterator(runtime_dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_socket(ec)) ++c.sockets;
  }
  c.vm_dirs =
      CountEntries(fs::path(runtime_dir) / "vm") + CountEntries(fs::path(runtime_dir) / "daemon/pool/vm");
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  const std::string prefix = fs::path(runtime_dir).lexically_normal().string();
  while (std::getline(mi, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mount_point;
    ls >> id >> parent >> devno >> root >> mount_point;
    if (mount_point.rfind(prefix, 0) == 0 &&
        (mount_point.size() == prefix.size() || mount_point[prefix.size()] == '/')) {
      ++c.mounts;
    }
  }
  if (fds_of > 0) c.fds = CountFds(fds_of);
  return c;
}

}  // namespace vmf
