#include "bench/private_containerd.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "bench/oci_image.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/jail.h"
#include "common/procfs.h"
#include "factory/digest.h"

namespace vmf::ctrd {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Where containerd-shim-runc-v2 (pkg/shim SocketAddress) puts its socket,
// whatever containerd's config says.
constexpr char kShimSocketDir[] = "/run/containerd/s";

std::string Tail(const std::string& s, size_t n = 2048) { return s.size() <= n ? s : s.substr(s.size() - n); }

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& a : v) out += (out.empty() ? "" : " ") + a;
  return out;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// The parent pid from /proc/PID/stat (after the command name, which may hold
// spaces and parentheses: the last ')' ends it); -1 if gone.
pid_t ParentOf(pid_t pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!stat.ok()) return -1;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(stat->substr(close + 1));
  char state = 0;
  pid_t ppid = -1;
  in >> state >> ppid;
  return in ? ppid : -1;
}

std::string LinkOf(pid_t pid, const char* what) {
  std::error_code ec;
  auto target = fs::read_symlink("/proc/" + std::to_string(pid) + "/" + what, ec);
  return ec ? "" : target.string();
}

bool Under(const std::string& path, const std::string& dir) {
  return path == dir ||
         (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 && path[dir.size()] == '/');
}

// A mountinfo path with its octal escapes (\040 for a space, ...) decoded.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const std::string oct = s.substr(i + 1, 3);
      if (oct.size() == 3 &&
          std::all_of(oct.begin(), oct.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>(std::stoi(oct, nullptr, 8));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// Mount points under dir (dir itself included), from /proc/self/mountinfo.
std::vector<std::string> MountsUnder(const std::string& dir) {
  std::vector<std::string> out;
  auto info = ReadFile("/proc/self/mountinfo", 16 << 20);
  if (!info.ok()) return out;
  for (const std::string& line : Lines(*info)) {
    std::istringstream in(line);
    std::string id, parent, devno, root, mount_point;
    if (!(in >> id >> parent >> devno >> root >> mount_point)) continue;
    std::string p = Unescape(mount_point);
    if (Under(p, dir)) out.push_back(p);
  }
  return out;
}

// The mount points of the cgroup hierarchies (v1 controllers and v2).
std::vector<std::string> CgroupMounts() {
  std::vector<std::string> out;
  auto info = ReadFile("/proc/self/mountinfo", 16 << 20);
  if (!info.ok()) return out;
  for (const std::string& line : Lines(*info)) {
    std::istringstream in(line);
    std::string id, parent, devno, root, mount_point, field;
    if (!(in >> id >> parent >> devno >> root >> mount_point)) continue;
    while (in >> field && field != "-") {
    }
    std::string fstype;
    if (in >> fstype && (fstype == "cgroup" || fstype == "cgroup2")) out.push_back(Unescape(mount_point));
  }
  return out;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

}  // namespace

std::string CtrResult::Describe() const {
  return "exit " + std::to_string(exit_code) + ", stdout: \"" + Tail(out, 1024) + "\", stderr: \"" +
         Tail(err, 1024) + "\"";
}

Result<CtrResult> RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                             const std::string& stdin_data, std::chrono::milliseconds stdin_eof_delay,
                             size_t max_output) {
  // A program that exits before reading all of its stdin must not kill us.
  static const bool kSigpipeIgnored = [] { return ::signal(SIGPIPE, SIG_IGN) != SIG_ERR; }();
  (void)kSigpipeIgnored;
  const Deadline deadline(timeout);
  int fds[2];
  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!stdin_data.empty()) {
    if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
    in_r.reset(fds[0]);
    in_w.reset(fds[1]);
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  out_r.reset(fds[0]);
  out_w.reset(fds[1]);
  if (::pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  err_r.reset(fds[0]);
  err_w.reset(fds[1]);

  SpawnOptions opts;
  opts.stdin_fd = in_r.get();
  opts.stdout_fd = out_w.get();
  opts.stderr_fd = err_w.get();
  VMF_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Spawn(argv, opts));
  in_r.reset();
  out_w.reset();
  err_w.reset();
  for (const UniqueFd* fd : {&in_w, &out_r, &err_r}) {
    if (fd->valid()) VMF_RETURN_IF_ERROR(SetNonBlocking(fd->get(), true));
  }

  CtrResult result;
  size_t written = 0;
  std::optional<Deadline> eof_at;  // when to close stdin, once all is written
  // Once the program has exited, what it left running may hold its stdout
  // open: its output is read for a short while more, not until the deadline.
  std::optional<Deadline> drain;
  char buf[65536];
  while (out_r.valid() || err_r.valid() || in_w.valid()) {
    if (!drain && child.Poll().has_value()) drain.emplace(milliseconds(1000));
    if (deadline.expired() || (drain && drain->expired())) break;
    if (eof_at && eof_at->expired()) in_w.reset();
    struct pollfd p[3];
    UniqueFd* owner[3];
    nfds_t n = 0;
    if (in_w.valid() && !eof_at) {
      p[n] = {.fd = in_w.get(), .events = POLLOUT, .revents = 0};
      owner[n++] = &in_w;
    }
    for (UniqueFd* fd : {&out_r, &err_r}) {
      if (!fd->valid()) continue;
      p[n] = {.fd = fd->get(), .events = POLLIN, .revents = 0};
      owner[n++] = fd;
    }
    int wait_ms = std::min(deadline.remaining_ms(), drain ? drain->remaining_ms() : 50);
    if (eof_at) wait_ms = std::min(wait_ms, eof_at->remaining_ms());
    if (n == 0) {  // only waiting to close stdin
      std::this_thread::sleep_for(milliseconds(std::max(wait_ms, 1)));
      continue;
    }
    int r = ::poll(p, n, std::max(wait_ms, 1));
    if (r < 0 && errno != EINTR) return ErrnoStatus(errno, "poll");
    if (r <= 0) continue;
    for (nfds_t i = 0; i < n; ++i) {
      if (p[i].revents == 0) continue;
      UniqueFd* fd = owner[i];
      if (fd == &in_w) {
        ssize_t w = ::write(in_w.get(), stdin_data.data() + written, stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
          in_w.reset();  // the reader has gone (EPIPE)
        } else if (written == stdin_data.size()) {
          // Done: EOF for the program, now or after the delay.
          if (stdin_eof_delay.count() > 0) {
            eof_at.emplace(stdin_eof_delay);
          } else {
            in_w.reset();
          }
        }
        continue;
      }
      std::string& sink = (fd == &out_r) ? result.out : result.err;
      ssize_t got = ::read(fd->get(), buf, sizeof(buf));
      if (got > 0) {
        size_t keep = std::min(static_cast<size_t>(got), max_output - std::min(max_output, sink.size()));
        sink.append(buf, keep);
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        fd->reset();
      }
    }
  }
  in_w.reset();
  auto status = child.Wait(deadline);
  if (!status.ok()) {
    child.Stop(milliseconds(0));
    return DeadlineExceeded(Join(argv) + ": still running after " + std::to_string(timeout.count()) +
                            " ms, killed; stdout so far: \"" + Tail(result.out, 1024) +
                            "\", stderr so far: \"" + Tail(result.err, 1024) + "\"");
  }
  result.exit_code = ExitCodeOf(*status);
  return result;
}

std::vector<pid_t> ProcessesNamed(const std::string& name) {
  std::vector<pid_t> out;
  for (const ProcEntry& p : ListProcesses()) {
    std::vector<std::string> argv = ProcessArgv(p.pid);
    if (!argv.empty() && fs::path(argv[0]).filename() == name) out.push_back(p.pid);
  }
  return out;
}

std::string PrivateContainerd::ConfigToml(const std::string& dir) {
  // Everything containerd keeps is in dir. The plugins that can only fail
  // here (aufs tries modprobe; btrfs, zfs and devmapper need their own
  // filesystems or setup) are off. CRI is on and starts without network:
  // no CNI plugins or config (it logs that once and carries on), a sandbox
  // image that the tests import rather than pull, its streaming server on a
  // loopback port of the kernel's choosing.
  std::string toml = R"(# A private containerd for vmfactory's tests (tests/support/containerd_env.h).
version = 2
root = "@DIR@/root"
state = "@DIR@/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "@DIR@/containerd.sock"

[ttrpc]
  address = "@DIR@/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "@DIR@/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "@IMAGE@"
    # A pod's oom_score_adj no lower than containerd's own: lowering it needs
    # CAP_SYS_RESOURCE, which a test machine (a container) may not have, and
    # runc then fails the pod ("failed to update /proc/self/oom_score_adj").
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "@DIR@/cni/bin"
      conf_dir = "@DIR@/cni/conf"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "@DIR@/runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vmfactory]
        runtime_type = "@RUNTIME@"
)";
  auto replace = [&](const std::string& token, const std::string& value) {
    for (size_t at = toml.find(token); at != std::string::npos; at = toml.find(token, at + value.size())) {
      toml.replace(at, token.size(), value);
    }
  };
  replace("@DIR@", dir);
  replace("@IMAGE@", kSandboxImageRef);
  replace("@RUNTIME@", kVmfactoryRuntime);
  return toml;
}

Result<std::unique_ptr<PrivateContainerd>> PrivateContainerd::Start(const std::string& extra_path_dir,
                                                                    std::chrono::seconds timeout) {
  if (::geteuid() != 0) return FailedPrecondition("a private containerd needs root");
  const std::string containerd = FindProgram("containerd");
  for (const char* prog : {"containerd", "ctr"}) {
    if (FindProgram(prog).empty()) {
      return FailedPrecondition(std::string(prog) + " is not installed (apt-get install containerd runc)");
    }
  }
  // Short: the sockets' paths must fit in sun_path (108 bytes).
  char tmpl[] = "/tmp/vmf-ctrd-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return ErrnoStatus(errno, "mkdtemp");
  std::unique_ptr<PrivateContainerd> c(new PrivateContainerd());
  c->dir_ = ScopedDir::Adopt(tmpl);
  const std::string& dir = c->dir();
  if (::chmod(dir.c_str(), 0700) != 0) return ErrnoStatus(errno, "chmod " + dir);
  for (const char* sub : {"root", "state", "opt", "cni", "cni/bin", "cni/conf", "fifo", "runc"}) {
    std::string p = dir + "/" + sub;
    if (::mkdir(p.c_str(), 0700) != 0) return ErrnoStatus(errno, "mkdir " + p);
  }
  c->address_ = dir + "/containerd.sock";
  c->ttrpc_address_ = c->address_ + ".ttrpc";
  c->log_path_ = dir + "/containerd.log";
  VMF_RETURN_IF_ERROR(WriteFileAtomic(c->config_path(), ConfigToml(dir), 0600));

  UniqueFd log(::open(c->log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return ErrnoStatus(errno, "create " + c->log_path_);
  const char* path_env = std::getenv("PATH");
  std::string path =
      path_env && *path_env ? path_env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  if (!extra_path_dir.empty()) path = extra_path_dir + ":" + path;
  Confinement env_only;  // no jail, ids or namespaces: only the environment
  env_only.no_new_privs = false;
  env_only.env = {"PATH=" + path};
  SpawnOptions opts;
  opts.stdout_fd = log.get();
  opts.stderr_fd = log.get();
  opts.umask = 022;  // as a system containerd runs: what it creates for containers is readable
  opts.confine = &env_only;
  VMF_ASSIGN_OR_RETURN(c->containerd_, ChildProcess::Spawn({containerd, "--config", c->config_path()}, opts));
  VMF_RETURN_IF_ERROR(c->WaitReady(timeout));
  return c;
}

Status PrivateContainerd::WaitReady(std::chrono::seconds timeout) {
  const Deadline deadline(timeout);
  std::string last;
  for (;;) {
    if (auto how = containerd_.Exited()) {
      return Unavailable("containerd exited (" + *how + ") before answering on " + address_ +
                         "; the end of its log:\n" + log());
    }
    if (::access(address_.c_str(), F_OK) == 0) {
      auto r = RunCommand({"ctr", "--address", address_, "version"},
                          milliseconds(std::clamp(deadline.remaining_ms(), 1000, 5000)));
      if (r.ok() && r->exit_code == 0) {
        answered_ = true;
        return OkStatus();
      }
      last = r.ok() ? r->Describe() : r.status().ToString();
    }
    if (deadline.expired()) {
      return DeadlineExceeded("containerd did not answer on " + address_ + " within " +
                              std::to_string(timeout.count()) + " s" +
                              (last.empty() ? " (no socket)" : " (ctr version: " + last + ")") +
                              "; the end of its log:\n" + log());
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

PrivateContainerd::~PrivateContainerd() { Stop(); }

Result<CtrResult> PrivateContainerd::Ctr(const std::vector<std::string>& args, std::chrono::seconds timeout,
                                         const std::string& stdin_data,
                                         std::chrono::milliseconds stdin_eof_delay) {
  return RunCommand(CtrArgv(args), timeout, stdin_data, stdin_eof_delay);
}

std::vector<std::string> PrivateContainerd::CtrArgv(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"ctr", "--address", address_, "--namespace", kNamespace};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string> PrivateContainerd::RunArgs(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"run", "--fifo-dir", fifo_dir(), "--runc-root", runc_root()};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<std::string> PrivateContainerd::ExecArgs(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {"tasks", "exec", "--fifo-dir", fifo_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Status PrivateContainerd::ImportImage(const std::string& tar, const std::string& ns) {
  VMF_ASSIGN_OR_RETURN(
      CtrResult r,
      RunCommand({"ctr", "--address", address_, "--namespace", ns, "images", "import", tar}, seconds(120)));
  if (r.exit_code != 0) return Internal("ctr images import " + tar + ": " + r.Describe());
  return OkStatus();
}

std::string PrivateContainerd::bundle_dir(const std::string& id) const {
  return dir() + "/state/io.containerd.runtime.v2.task/" + kNamespace + "/" + id;
}

std::string PrivateContainerd::runc_shim_socket(const std::string& id) const {
  // pkg/shim.SocketAddress: sha256 of filepath.Join(address, ns, id).
  return std::string(kShimSocketDir) + "/" + Sha256Hex(address_ + "/" + kNamespace + "/" + id);
}

std::string PrivateContainerd::log() const { return log_path_.empty() ? "" : TailOfFile(log_path_, 8192); }

void PrivateContainerd::DeleteContainers() {
  // Bounded as a whole: a wedged containerd is killed below anyway.
  const Deadline deadline(seconds(30));
  auto ctr = [&](const std::string& ns, std::vector<std::string> args) -> std::optional<CtrResult> {
    if (deadline.expired()) return std::nullopt;
    std::vector<std::string> argv = {"ctr", "--address", address_, "--namespace", ns};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = RunCommand(argv, milliseconds(std::clamp(deadline.remaining_ms(), 1, 10000)));
    if (!r.ok()) return std::nullopt;
    return *r;
  };
  auto namespaces = ctr(kNamespace, {"namespaces", "ls", "--quiet"});
  if (!namespaces) return;
  for (const std::string& ns : Lines(namespaces->out)) {
    namespaces_.push_back(ns);
    if (auto tasks = ctr(ns, {"tasks", "ls", "--quiet"})) {
      for (const std::string& id : Lines(tasks->out)) (void)ctr(ns, {"tasks", "delete", "--force", id});
    }
    if (auto containers = ctr(ns, {"containers", "ls", "--quiet"})) {
      for (const std::string& id : Lines(containers->out)) {
        containers_.emplace_back(ns, id);
        (void)ctr(ns, {"containers", "delete", id});
      }
    }
  }
}

void PrivateContainerd::KillLeftovers() {
  const std::string& d = dir();
  // Never ourselves or whoever runs us.
  std::set<pid_t> spare;
  for (pid_t p = ::getpid(); p > 1 && spare.insert(p).second;) p = ParentOf(p);
  for (int round = 0; round < 3; ++round) {
    std::map<pid_t, std::vector<pid_t>> children;
    std::vector<pid_t> roots;
    for (const ProcEntry& e : ListProcesses()) {
      if (spare.count(e.pid)) continue;
      children[ParentOf(e.pid)].push_back(e.pid);
      bool ours = Under(LinkOf(e.pid, "cwd"), d) || Under(LinkOf(e.pid, "exe"), d);
      for (const std::string& arg : ProcessArgv(e.pid)) ours = ours || arg.find(d) != std::string::npos;
      if (ours) roots.push_back(e.pid);
    }
    if (roots.empty()) return;
    // The roots and everything under them (containers under their shim).
    std::set<pid_t> doomed;
    std::vector<pid_t> todo = roots;
    while (!todo.empty()) {
      pid_t p = todo.back();
      todo.pop_back();
      if (spare.count(p) || !doomed.insert(p).second) continue;
      for (pid_t child : children[p]) todo.push_back(child);
    }
    for (pid_t p : doomed) ::kill(p, SIGKILL);
    // They are not our children: gone when their parent (often init) has reaped them.
    const Deadline gone(seconds(5));
    while (!gone.expired() &&
           std::any_of(doomed.begin(), doomed.end(), [](pid_t p) { return ProcessAlive(p); })) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
}

void PrivateContainerd::UnmountAll() {
  for (int pass = 0; pass < 8; ++pass) {
    std::vector<std::string> mounts = MountsUnder(dir());
    if (mounts.empty()) return;
    // Deepest first: a mount under another goes before it.
    std::sort(mounts.begin(), mounts.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const std::string& m : mounts) ::umount2(m.c_str(), MNT_DETACH);
  }
}

void PrivateContainerd::CollectTasks() {
  // The state dir names every task that had a shim, also one that ctr could
  // no longer list (containerd killed), and its bundle's config.json the
  // task's cgroup.
  std::error_code ec;
  const fs::path tasks = fs::path(dir()) / "state" / "io.containerd.runtime.v2.task";
  for (auto ns = fs::directory_iterator(tasks, ec); !ec && ns != fs::directory_iterator(); ns.increment(ec)) {
    std::error_code ec2;
    for (auto id = fs::directory_iterator(ns->path(), ec2); !ec2 && id != fs::directory_iterator();
         id.increment(ec2)) {
      containers_.emplace_back(ns->path().filename().string(), id->path().filename().string());
      auto spec = ReadFile((id->path() / "config.json").string(), 16 << 20);
      if (!spec.ok()) continue;
      auto j = nlohmann::json::parse(*spec, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j["linux"].is_object() && j["linux"]["cgroupsPath"].is_string()) {
        cgroups_.push_back(j["linux"]["cgroupsPath"].get<std::string>());
      }
    }
  }
}

void PrivateContainerd::RemoveShimSockets() {
  for (const auto& [ns, id] : containers_) {
    // pkg/shim.SocketAddress: sha256 of filepath.Join(address, ns, id).
    std::string sock = std::string(kShimSocketDir) + "/" + Sha256Hex(address_ + "/" + ns + "/" + id);
    struct stat st {};
    if (::lstat(sock.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(sock.c_str());
  }
}

void PrivateContainerd::RemoveCgroups() {
  // The cgroups of tasks whose runtime was killed before it could remove
  // them, then the namespaces' parents that ctr's default cgroupsPath
  // (/NS/ID) makes, each only if empty (rmdir refuses otherwise).
  std::vector<std::string> paths;
  auto usable = [](const std::string& p) {
    return p.size() > 1 && p[0] == '/' && p.find(':') == std::string::npos &&
           p.find("..") == std::string::npos;
  };
  for (const std::string& p : cgroups_) {
    if (usable(p)) paths.push_back(p);
  }
  std::set<std::string> parents = {std::string("/") + kNamespace};
  for (const std::string& ns : namespaces_) parents.insert("/" + ns);
  for (const auto& [ns, id] : containers_) parents.insert("/" + ns);
  for (const std::string& p : paths) {
    std::string parent = fs::path(p).parent_path().string();
    if (usable(parent)) parents.insert(parent);
  }
  const std::vector<std::string> roots = CgroupMounts();
  // A killed task's last processes leave its cgroup shortly after they die.
  const Deadline deadline(seconds(2));
  for (bool busy = true; busy && !deadline.expired();) {
    busy = false;
    for (const std::string& root : roots) {
      for (const std::string& p : paths) {
        if (::rmdir((root + p).c_str()) != 0 && errno != ENOENT) busy = true;
      }
    }
    if (busy) std::this_thread::sleep_for(milliseconds(20));
  }
  for (const std::string& root : roots) {
    for (const std::string& p : parents) ::rmdir((root + p).c_str());
  }
  cgroups_.clear();
}

void PrivateContainerd::Stop() {
  if (!dir_.valid()) return;
  // Through containerd while it answers (a containerd that never did has
  // made nothing to delete).
  if (answered_ && containerd_.Running()) DeleteContainers();
  containerd_.Stop(seconds(5));
  CollectTasks();
  KillLeftovers();
  UnmountAll();
  RemoveShimSockets();
  RemoveCgroups();
  containers_.clear();
  namespaces_.clear();
  dir_.Remove();
}

}  // namespace vmf::ctrd
