#include "spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "log.h"

namespace vmf::agent {
namespace {

// Stages reported by a child that failed between fork and exec.
enum ChildStage : int {
  kStageSetsid = 1,
  kStageDup,
  kStageSetgid,
  kStageSetuid,
  kStageChdir,
  kStageExec,
  kStageTty,
  kStageRlimit,
  kStageSetgroups,
  kStageNoNewPrivs,
  kStageUnshare,
  kStagePrivate,
  kStageBindRoot,
  kStageOpenBind,
  kStageEnterRoot,
  kStageMkdir,
  kStageMount,
  kStageRemount,
  kStagePropagation,
  kStageDevices,
  kStageRoRoot,
  kStageMask,
  kStageReadonly,
  kStageHostname,
  kStageSetns,
  kStageChroot,
};

// What a failing child writes on the report pipe (one write: atomic).
struct Report {
  int stage = 0;
  int err = 0;
  int index = 0;  // which mount, path, rlimit or namespace
};

struct DevNode {
  const char* path;
  unsigned major, minor;
};
constexpr DevNode kDevNodes[] = {{"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
                                 {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0}};
struct DevLink {
  const char* target;
  const char* path;
};
constexpr DevLink kDevLinks[] = {{"/proc/self/fd", "/dev/fd"},
                                 {"/proc/self/fd/0", "/dev/stdin"},
                                 {"/proc/self/fd/1", "/dev/stdout"},
                                 {"/proc/self/fd/2", "/dev/stderr"},
                                 {"pts/ptmx", "/dev/ptmx"}};
constexpr const char* kJoinNamespaces[] = {"ipc", "uts", "mnt"};
constexpr int kJoinNsFlags[] = {CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNS};

struct RlimitNames {
  const char* name;
  int resource;
};
constexpr RlimitNames kRlimits[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

// Everything the child needs, built before the fork: from there on the child
// makes only system calls (and writes in its own copy of this plan).
struct ChildPlan {
  int in_fd = -1, out_fd = -1, err_fd = -1;  // all the pty slave with a terminal
  bool terminal = false;
  // A container init's terminal is made by the child in the container's own
  // devpts (so that it has a name there) once that is mounted; the master
  // goes back to the agent over this socket.
  int tty_sock = -1;
  struct winsize winsize = {};
  int report_fd = -1;
  int go_fd = -1;  // -1: no go-ahead to wait for
  uid_t uid = 0;
  gid_t gid = 0;
  bool set_groups = false;
  std::vector<gid_t> groups;
  const char* cwd = "/";
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  std::vector<const char*> candidates;
  std::vector<std::pair<int, struct rlimit>> rlimits;
  bool no_new_privs = false;
  // A container's init.
  const ContainerInit* init = nullptr;
  std::vector<std::string> targets;  // copies of the mount targets: MkdirAll writes in them
  std::vector<std::string> masked, readonly;
  std::vector<int> tree_fds;  // the open_tree fd of each bind
  std::vector<char> tree_is_dir;
  // A process in a running container.
  bool join = false;
  int ns_fds[3] = {-1, -1, -1};  // kJoinNamespaces
  int root_fd = -1;
};

// Moves fd to a number >= 3 (so dup2 onto the standard fds in the child
// never clobbers it), keeping it CLOEXEC.
Status MoveAbove2(UniqueFd* fd) {
  if (fd->get() >= 3) return OkStatus();
  int moved = ::fcntl(fd->get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return ErrnoStatus(errno, "fcntl(F_DUPFD_CLOEXEC)");
  fd->reset(moved);
  return OkStatus();
}

// A pipe whose ends are CLOEXEC and not 0, 1 or 2.
Status MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe2");
  read_end->reset(p[0]);
  write_end->reset(p[1]);
  VMF_RETURN_IF_ERROR(MoveAbove2(read_end));
  return MoveAbove2(write_end);
}

Result<UniqueFd> OpenAbove2(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  VMF_RETURN_IF_ERROR(MoveAbove2(&fd));
  return fd;
}

struct winsize WinSize(const grpc::Process& proc) {
  struct winsize ws;
  std::memset(&ws, 0, sizeof(ws));
  if (proc.has_consolesize()) {
    ws.ws_row = static_cast<unsigned short>(std::min<uint32_t>(proc.consolesize().height(), 0xffff));
    ws.ws_col = static_cast<unsigned short>(std::min<uint32_t>(proc.consolesize().width(), 0xffff));
  }
  return ws;
}

// A pty: the master (ours) and the slave (the child's 0, 1 and 2), from the
// devpts whose ptmx is `ptmx` (a container's: its processes can name their
// terminal), else from the agent's. The slave is opened with TIOCGPTPEER:
// no path lookup, whatever devpts instance it is.
Status OpenPty(const grpc::Process& proc, const std::string& ptmx, UniqueFd* master, UniqueFd* slave) {
  if (!ptmx.empty()) master->reset(::open(ptmx.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!*master) master->reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!*master) return ErrnoStatus(errno, "posix_openpt");
  VMF_RETURN_IF_ERROR(MoveAbove2(master));
  if (::unlockpt(master->get()) != 0) return ErrnoStatus(errno, "unlockpt");
  slave->reset(::ioctl(master->get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!*slave) return ErrnoStatus(errno, "open the pty's slave (TIOCGPTPEER)");
  VMF_RETURN_IF_ERROR(MoveAbove2(slave));
  struct winsize ws = WinSize(proc);
  if (ws.ws_row > 0 && ws.ws_col > 0) ::ioctl(master->get(), TIOCSWINSZ, &ws);
  return OkStatus();
}

// Receives the pty master a container's init sends (invalid if it sent none).
UniqueFd ReceiveFd(int sock) {
  char data = 0;
  struct iovec iov = {&data, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return UniqueFd();
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int fd;
    std::memcpy(&fd, CMSG_DATA(c), sizeof(fd));
    return UniqueFd(fd);
  }
  return UniqueFd();
}

void SetNonBlocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// ---------------------------------------------------------------- the child
// Only async-signal-safe calls from here on (system calls, mostly raw).

[[noreturn]] void ChildFail(int fd, int stage, int err, int index = 0) {
  Report r;
  r.stage = stage;
  r.err = err;
  r.index = index;
  ssize_t unused = ::write(fd, &r, sizeof(r));
  (void)unused;
  ::_exit(127);
}

// mkdir -p, in place (path is the child's own copy). 0 or an errno.
int MkdirAll(char* path) {
  for (char* s = path + 1; *s != '\0'; ++s) {
    if (*s != '/') continue;
    *s = '\0';
    int r = ::mkdir(path, 0755);
    int e = errno;
    *s = '/';
    if (r != 0 && e != EEXIST) return e;
  }
  if (::mkdir(path, 0755) != 0 && errno != EEXIST) return errno;
  return 0;
}

// Makes path an (empty) file unless something is there. 0 or an errno.
int MakeFile(char* path) {
  struct stat st;
  if (::stat(path, &st) == 0) return 0;
  char* slash = std::strrchr(path, '/');
  if (slash != nullptr && slash != path) {
    *slash = '\0';
    int e = MkdirAll(path);
    *slash = '/';
    if (e != 0) return e;
  }
  int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// The init's terminal, in the container's devpts (/dev/ptmx when it has no
// /dev/pts of its own): its slave becomes 0, 1 and 2 and the controlling
// terminal, its master goes to the agent.
void SetUpTerminal(ChildPlan& p) {
  const int rep = p.report_fd;
  int m = ::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) m = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) ChildFail(rep, kStageTty, errno);
  int unlock = 0;
  if (::ioctl(m, TIOCSPTLCK, &unlock) != 0) ChildFail(rep, kStageTty, errno);
  int s = ::ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) ChildFail(rep, kStageTty, errno);
  if (p.winsize.ws_row > 0 && p.winsize.ws_col > 0) ::ioctl(m, TIOCSWINSZ, &p.winsize);
  char data = 't';
  struct iovec iov = {&data, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  std::memset(control, 0, sizeof(control));
  struct msghdr msg;
  std::memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &m, sizeof(m));
  if (::sendmsg(p.tty_sock, &msg, MSG_NOSIGNAL) != 1) ChildFail(rep, kStageTty, errno);
  ::close(m);
  if (::dup2(s, 0) < 0 || ::dup2(s, 1) < 0 || ::dup2(s, 2) < 0) ChildFail(rep, kStageDup, errno);
  if (s > 2) ::close(s);
  if (::ioctl(0, TIOCSCTTY, 0) != 0) ChildFail(rep, kStageTty, errno);
}

void SetUpContainer(ChildPlan& p) {
  const int rep = p.report_fd;
  const ContainerInit& c = *p.init;
  // A pod's container joins its sandbox's IPC and UTS namespaces (ns_fds,
  // opened before the fork) and makes the rest its own.
  int fresh = CLONE_NEWNS;
  for (int i = 0; i < 2; ++i) {
    if (p.ns_fds[i] < 0) {
      fresh |= kJoinNsFlags[i];
    } else if (::setns(p.ns_fds[i], kJoinNsFlags[i]) != 0) {
      ChildFail(rep, kStageSetns, errno, i);
    }
  }
  if (::unshare(fresh) != 0) ChildFail(rep, kStageUnshare, errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ChildFail(rep, kStagePrivate, errno);
  const char* root = c.rootfs.c_str();
  if (::mount(root, root, nullptr, MS_BIND | MS_REC, nullptr) != 0) ChildFail(rep, kStageBindRoot, errno);

  // Bind sources are guest paths: open them while the guest's tree is ours.
  for (size_t i = 0; i < c.mounts.size(); ++i) {
    const MountStep& m = c.mounts[i];
    if (m.kind != MountStep::Kind::kBind) continue;
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (m.recursive ? AT_RECURSIVE : 0);
    int fd = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, m.source.c_str(), flags));
    if (fd < 0) ChildFail(rep, kStageOpenBind, errno, static_cast<int>(i));
    struct stat st;
    p.tree_fds[i] = fd;
    p.tree_is_dir[i] = ::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode);
  }

  // Enter the rootfs. pivot_root refuses an initramfs root (EINVAL), so as
  // Kata does there: move the rootfs onto "/" and chroot into it.
  if (::chdir(root) != 0 || ::mount(root, "/", nullptr, MS_MOVE, nullptr) != 0 || ::chroot(".") != 0 ||
      ::chdir("/") != 0)
    ChildFail(rep, kStageEnterRoot, errno);

  for (size_t i = 0; i < c.mounts.size(); ++i) {
    const MountStep& m = c.mounts[i];
    const int idx = static_cast<int>(i);
    char* target = p.targets[i].data();
    const bool bind = m.kind == MountStep::Kind::kBind;
    int e = (bind && !p.tree_is_dir[i]) ? MakeFile(target) : MkdirAll(target);
    if (e != 0) {
      if (m.optional) continue;
      ChildFail(rep, kStageMkdir, e, idx);
    }
    if (bind) {
      if (::syscall(SYS_move_mount, p.tree_fds[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        if (m.optional) continue;
        ChildFail(rep, kStageMount, errno, idx);
      }
      if (m.flags != 0 && ::mount(nullptr, target, nullptr, MS_REMOUNT | MS_BIND | m.flags, nullptr) != 0)
        ChildFail(rep, kStageRemount, errno, idx);
    } else {
      const char* data = m.data.empty() ? nullptr : m.data.c_str();
      if (::mount(m.source.c_str(), target, m.fstype.c_str(), m.flags, data) != 0) {
        if (m.optional) continue;
        ChildFail(rep, kStageMount, errno, idx);
      }
    }
    if (m.propagation != 0 && ::mount(nullptr, target, nullptr, m.propagation, nullptr) != 0)
      ChildFail(rep, kStagePropagation, errno, idx);
  }

  if (c.populate_dev) {
    int i = 0;
    for (const DevNode& d : kDevNodes) {
      if (::mknod(d.path, S_IFCHR | 0666, makedev(d.major, d.minor)) != 0 && errno != EEXIST)
        ChildFail(rep, kStageDevices, errno, i);
      ::chmod(d.path, 0666);  // the umask took bits off
      ++i;
    }
    for (const DevLink& l : kDevLinks) {
      if (::symlink(l.target, l.path) != 0 && errno != EEXIST) ChildFail(rep, kStageDevices, errno, i);
      ++i;
    }
  }

  if (c.readonly_root && ::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0)
    ChildFail(rep, kStageRoRoot, errno);

  for (size_t i = 0; i < p.masked.size(); ++i) {
    const char* path = p.masked[i].c_str();
    struct stat st;
    if (::stat(path, &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      ChildFail(rep, kStageMask, errno, static_cast<int>(i));
    }
    int r = S_ISDIR(st.st_mode) ? ::mount("tmpfs", path, "tmpfs", MS_RDONLY, nullptr)
                                : ::mount("/dev/null", path, nullptr, MS_BIND, nullptr);
    if (r != 0) ChildFail(rep, kStageMask, errno, static_cast<int>(i));
  }
  for (size_t i = 0; i < p.readonly.size(); ++i) {
    const char* path = p.readonly[i].c_str();
    if (::mount(path, path, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      ChildFail(rep, kStageReadonly, errno, static_cast<int>(i));
    }
    if (::mount(nullptr, path, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0)
      ChildFail(rep, kStageReadonly, errno, static_cast<int>(i));
  }

  // (A shared UTS namespace keeps its sandbox's hostname.)
  if (!c.hostname.empty() && p.ns_fds[1] < 0 && ::sethostname(c.hostname.data(), c.hostname.size()) != 0)
    ChildFail(rep, kStageHostname, errno);
  if (p.tty_sock >= 0) SetUpTerminal(p);
}

void JoinContainer(ChildPlan& p) {
  for (int i = 0; i < 3; ++i)
    if (::setns(p.ns_fds[i], kJoinNsFlags[i]) != 0) ChildFail(p.report_fd, kStageSetns, errno, i);
  // setns(mnt) left us at the namespace's root; the container's is its init's.
  if (::fchdir(p.root_fd) != 0 || ::chroot(".") != 0) ChildFail(p.report_fd, kStageChroot, errno);
}

[[noreturn]] void ChildMain(ChildPlan& p) {
  const int rep = p.report_fd;
  if (::setsid() < 0) ChildFail(rep, kStageSetsid, errno);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &sa, nullptr);  // EINVAL for KILL/STOP: fine
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  // Every fd of the plan is >= 3 (MoveAbove2), so these dup2 cannot collide.
  if (p.tty_sock < 0) {  // else: SetUpTerminal, inside the container
    if (::dup2(p.in_fd, 0) < 0 || ::dup2(p.out_fd, 1) < 0 || ::dup2(p.err_fd, 2) < 0)
      ChildFail(rep, kStageDup, errno);
    if (p.terminal && ::ioctl(0, TIOCSCTTY, 0) != 0) ChildFail(rep, kStageTty, errno);
  }

  if (p.go_fd >= 0) {
    char c = 0;
    ssize_t n;
    do {
      n = ::read(p.go_fd, &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(127);  // the agent gave up on us (and reaps us)
  }

  if (p.init != nullptr) SetUpContainer(p);
  if (p.join) JoinContainer(p);

  for (size_t i = 0; i < p.rlimits.size(); ++i)
    if (::setrlimit(static_cast<__rlimit_resource_t>(p.rlimits[i].first), &p.rlimits[i].second) != 0)
      ChildFail(rep, kStageRlimit, errno, static_cast<int>(i));
  // Raw system calls: this process has one thread, whatever libc thinks.
  if (p.set_groups && ::syscall(SYS_setgroups, p.groups.size(), p.groups.data()) != 0)
    ChildFail(rep, kStageSetgroups, errno);
  if (p.gid != 0 && ::syscall(SYS_setgid, p.gid) != 0) ChildFail(rep, kStageSetgid, errno);
  if (p.uid != 0 && ::syscall(SYS_setuid, p.uid) != 0) ChildFail(rep, kStageSetuid, errno);
  if (::chdir(p.cwd) != 0) ChildFail(rep, kStageChdir, errno);
  if (p.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    ChildFail(rep, kStageNoNewPrivs, errno);

  // Close every inherited fd except 0-2 and the report pipe (CLOEXEC).
  bool closed = true;
  if (rep > 3 && ::syscall(SYS_close_range, 3u, static_cast<unsigned>(rep - 1), 0u) != 0) closed = false;
  if (closed && ::syscall(SYS_close_range, static_cast<unsigned>(rep + 1), ~0u, 0u) != 0) closed = false;
  if (!closed) {
    for (int fd = 3; fd < 65536; ++fd)
      if (fd != rep) ::close(fd);
  }

  int saved = ENOENT;
  for (const char* path : p.candidates) {
    ::execve(path, p.argv, p.envp);
    int e = errno;
    if (e == ENOENT || e == ENOTDIR) continue;
    saved = e;
    if (e != EACCES) break;  // like execvp: remember EACCES but keep searching
  }
  ChildFail(rep, kStageExec, saved);
}

// ---------------------------------------------------------------- the agent

// What failed, for the error message.
std::string Describe(const Report& r, const grpc::Process& proc, const std::string& cwd,
                     const ContainerInit* init) {
  auto at = [](const auto& v, int i) -> decltype(&v[0]) {
    return i >= 0 && static_cast<size_t>(i) < static_cast<size_t>(v.size()) ? &v[static_cast<size_t>(i)]
                                                                            : nullptr;
  };
  const MountStep* m = init != nullptr ? at(init->mounts, r.index) : nullptr;
  std::string what_mount = "a mount";
  if (m != nullptr) {
    what_mount = m->kind == MountStep::Kind::kBind ? "bind " + m->source : m->fstype;
    what_mount += " on " + m->target;
  }
  switch (r.stage) {
    case kStageSetsid:
      return "setsid";
    case kStageDup:
      return "dup2";
    case kStageSetgid:
      return "setgid";
    case kStageSetuid:
      return "setuid";
    case kStageChdir:
      return "chdir " + cwd;
    case kStageTty:
      return "set the controlling terminal";
    case kStageRlimit: {
      auto* l = at(proc.rlimits(), r.index);
      return "setrlimit " + (l != nullptr ? l->type() : std::string("?"));
    }
    case kStageSetgroups:
      return "setgroups";
    case kStageNoNewPrivs:
      return "prctl(PR_SET_NO_NEW_PRIVS)";
    case kStageUnshare:
      return "unshare the mount, UTS and IPC namespaces";
    case kStagePrivate:
      return "make / private";
    case kStageBindRoot:
      return "bind the rootfs " + (init != nullptr ? init->rootfs : std::string());
    case kStageOpenBind:
      return "open the bind source " + (m != nullptr ? m->source + " for " + m->target : std::string("?"));
    case kStageEnterRoot:
      return "enter the rootfs " + (init != nullptr ? init->rootfs : std::string());
    case kStageMkdir:
      return "create the mount target " + (m != nullptr ? m->target : std::string("?"));
    case kStageMount:
      return "mount " + what_mount;
    case kStageRemount:
      return "remount " + what_mount;
    case kStagePropagation:
      return "set the propagation of " + (m != nullptr ? m->target : std::string("?"));
    case kStageDevices: {
      size_t n = sizeof(kDevNodes) / sizeof(kDevNodes[0]);
      size_t i = static_cast<size_t>(r.index);
      const char* path =
          i < n ? kDevNodes[i].path : kDevLinks[(i - n) % (sizeof(kDevLinks) / sizeof(kDevLinks[0]))].path;
      return std::string("create ") + path;
    }
    case kStageRoRoot:
      return "remount / read-only";
    case kStageMask: {
      auto* s = init != nullptr ? at(init->masked_paths, r.index) : nullptr;
      return "mask " + (s != nullptr ? *s : std::string("?"));
    }
    case kStageReadonly: {
      auto* s = init != nullptr ? at(init->readonly_paths, r.index) : nullptr;
      return "make " + (s != nullptr ? *s : std::string("?")) + " read-only";
    }
    case kStageHostname:
      return "sethostname " + (init != nullptr ? init->hostname : std::string());
    case kStageSetns:
      return std::string("setns ") + (r.index >= 0 && r.index < 3 ? kJoinNamespaces[r.index] : "?");
    case kStageChroot:
      return "enter the container's root";
    default:
      return "exec " + proc.args(0);
  }
}

void Reap(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
}

// Points the agent's future children at a PID namespace (a new one, or a
// running container's) and back again.
class ChildrenPidNs {
 public:
  Status Open() {
    VMF_ASSIGN_OR_RETURN(own_, OpenAbove2("/proc/self/ns/pid", O_RDONLY));
    return OkStatus();
  }
  Status EnterNew() {
    if (::unshare(CLONE_NEWPID) != 0) return ErrnoStatus(errno, "unshare(CLONE_NEWPID)");
    moved_ = true;
    return OkStatus();
  }
  Status Enter(int ns_fd) {
    if (::setns(ns_fd, CLONE_NEWPID) != 0) return ErrnoStatus(errno, "setns pid");
    moved_ = true;
    return OkStatus();
  }
  void Restore() {
    if (moved_ && ::setns(own_.get(), CLONE_NEWPID) != 0)
      Log("cannot return to the agent's PID namespace: %s", std::strerror(errno));
    moved_ = false;
  }
  ~ChildrenPidNs() { Restore(); }

 private:
  UniqueFd own_;
  bool moved_ = false;
};

}  // namespace

int RlimitResource(const std::string& type) {
  for (const RlimitNames& r : kRlimits)
    if (type == r.name) return r.resource;
  return -1;
}

Result<Spawned> Spawn(const grpc::Process& proc, const SpawnOptions& opt) {
  if (proc.args_size() == 0) return InvalidArgument("empty Args");
  if (opt.init != nullptr && opt.join != nullptr) return InvalidArgument("both a container init and a join");
  std::vector<std::string> args(proc.args().begin(), proc.args().end());
  std::vector<std::string> env(proc.env().begin(), proc.env().end());
  if (env.empty()) {
    env.push_back(std::string("PATH=") + kDefaultPath);
    env.emplace_back("HOME=/root");
  }
  std::string path_var = kDefaultPath;
  for (const std::string& e : env)
    if (e.rfind("PATH=", 0) == 0) path_var = e.substr(5);
  for (const std::string& a : args)
    if (a.find('\0') != std::string::npos) return InvalidArgument("argument contains a NUL byte");
  for (const std::string& e : env)
    if (e.find('\0') != std::string::npos) return InvalidArgument("environment contains a NUL byte");
  std::string cwd = proc.cwd().empty() ? "/" : proc.cwd();
  if (cwd.find('\0') != std::string::npos) return InvalidArgument("cwd contains a NUL byte");

  // Everything the child needs is built before fork().
  ChildPlan plan;
  for (const grpc::POSIXRlimit& r : proc.rlimits()) {
    int res = RlimitResource(r.type());
    if (res < 0) return InvalidArgument("unknown rlimit type '" + r.type().substr(0, 64) + "'");
    if (r.soft() > r.hard()) return InvalidArgument("rlimit " + r.type() + ": soft limit above the hard one");
    struct rlimit rl;
    rl.rlim_cur = r.soft();
    rl.rlim_max = r.hard();
    plan.rlimits.emplace_back(res, rl);
  }
  std::vector<std::string> cand_store;
  if (args[0].find('/') != std::string::npos) {
    cand_store.push_back(args[0]);
  } else {
    size_t start = 0;
    while (true) {
      size_t colon = path_var.find(':', start);
      std::string dir =
          path_var.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (dir.empty()) dir = ".";
      cand_store.push_back(dir + "/" + args[0]);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  plan.candidates.reserve(cand_store.size());
  for (const std::string& c : cand_store) plan.candidates.push_back(c.c_str());
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = cwd.c_str();
  plan.uid = proc.has_user() ? proc.user().uid() : 0;
  plan.gid = proc.has_user() ? proc.user().gid() : 0;
  if (proc.has_user())
    plan.groups.assign(proc.user().additionalgids().begin(), proc.user().additionalgids().end());
  // Supplementary groups: the ones asked for; none when changing gid or in
  // a container; else (a root process in the VM) the agent's.
  plan.set_groups = !plan.groups.empty() || plan.gid != 0 || opt.init != nullptr || opt.join != nullptr;
  plan.no_new_privs = proc.nonewprivileges();

  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w, rep_r, rep_w, go_r, go_w, master, slave, tty_ours,
      tty_child;
  if (proc.terminal() && opt.init != nullptr) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      return ErrnoStatus(errno, "socketpair");
    tty_ours.reset(sv[0]);
    tty_child.reset(sv[1]);
    VMF_RETURN_IF_ERROR(MoveAbove2(&tty_ours));
    VMF_RETURN_IF_ERROR(MoveAbove2(&tty_child));
    plan.terminal = true;
    plan.tty_sock = tty_child.get();
    plan.winsize = WinSize(proc);
  } else if (proc.terminal()) {
    std::string ptmx;
    if (opt.join != nullptr) ptmx = "/proc/" + std::to_string(opt.join->init_pid) + "/root/dev/pts/ptmx";
    VMF_RETURN_IF_ERROR(OpenPty(proc, ptmx, &master, &slave));
    plan.terminal = true;
    plan.in_fd = plan.out_fd = plan.err_fd = slave.get();
  } else {
    VMF_RETURN_IF_ERROR(MakePipe(&in_r, &in_w));
    VMF_RETURN_IF_ERROR(MakePipe(&out_r, &out_w));
    VMF_RETURN_IF_ERROR(MakePipe(&err_r, &err_w));
    plan.in_fd = in_r.get();
    plan.out_fd = out_w.get();
    plan.err_fd = err_w.get();
  }
  VMF_RETURN_IF_ERROR(MakePipe(&rep_r, &rep_w));
  plan.report_fd = rep_w.get();
  if (opt.before_start) {
    VMF_RETURN_IF_ERROR(MakePipe(&go_r, &go_w));
    plan.go_fd = go_r.get();
  }

  ChildrenPidNs pidns;
  UniqueFd join_fds[3], root_fd, join_pidns;
  if (opt.init != nullptr || opt.join != nullptr) VMF_RETURN_IF_ERROR(pidns.Open());
  if (opt.init != nullptr) {
    const ContainerInit& c = *opt.init;
    plan.init = &c;
    for (const MountStep& m : c.mounts) plan.targets.push_back(m.target);
    plan.masked = c.masked_paths;
    plan.readonly = c.readonly_paths;
    plan.tree_fds.assign(c.mounts.size(), -1);
    plan.tree_is_dir.assign(c.mounts.size(), 1);
    const pid_t share[2] = {c.share_ipc_with, c.share_uts_with};  // kJoinNamespaces order
    for (int i = 0; i < 2; ++i) {
      if (share[i] <= 0) continue;
      VMF_ASSIGN_OR_RETURN(
          join_fds[i],
          OpenAbove2("/proc/" + std::to_string(share[i]) + "/ns/" + kJoinNamespaces[i], O_RDONLY));
      plan.ns_fds[i] = join_fds[i].get();
    }
    if (c.share_pid_with > 0) {
      VMF_ASSIGN_OR_RETURN(join_pidns,
                           OpenAbove2("/proc/" + std::to_string(c.share_pid_with) + "/ns/pid", O_RDONLY));
    }
  } else if (opt.join != nullptr) {
    std::string base = "/proc/" + std::to_string(opt.join->init_pid);
    for (int i = 0; i < 3; ++i) {
      VMF_ASSIGN_OR_RETURN(join_fds[i], OpenAbove2(base + "/ns/" + kJoinNamespaces[i], O_RDONLY));
      plan.ns_fds[i] = join_fds[i].get();
    }
    VMF_ASSIGN_OR_RETURN(root_fd, OpenAbove2(base + "/root", O_RDONLY | O_DIRECTORY));
    plan.root_fd = root_fd.get();
    plan.join = true;
    VMF_ASSIGN_OR_RETURN(join_pidns, OpenAbove2(base + "/ns/pid", O_RDONLY));
  }

  // The child is PID 1 of a new PID namespace (init) or in the container's
  // (join); the agent's later children are not (Restore).
  if (opt.init != nullptr) VMF_RETURN_IF_ERROR(join_pidns ? pidns.Enter(join_pidns.get()) : pidns.EnterNew());
  if (opt.join != nullptr) VMF_RETURN_IF_ERROR(pidns.Enter(join_pidns.get()));
  pid_t pid = ::fork();
  if (pid == 0) ChildMain(plan);
  int fork_errno = errno;
  pidns.Restore();
  if (pid < 0) return ErrnoStatus(fork_errno, "fork");
  in_r.reset();
  out_w.reset();
  err_w.reset();
  rep_w.reset();
  slave.reset();
  tty_child.reset();
  go_r.reset();
  for (UniqueFd& f : join_fds) f.reset();
  root_fd.reset();

  if (opt.before_start) {
    Status st = opt.before_start(pid);
    if (!st.ok()) {
      ::kill(pid, SIGKILL);
      Reap(pid);
      return st;
    }
    char go = 'g';
    ssize_t n;
    do {
      n = ::write(go_w.get(), &go, 1);
    } while (n < 0 && errno == EINTR);
    go_w.reset();
  }

  // A container init's terminal: its master comes before the exec (none if
  // the child failed before: its report says why).
  if (tty_ours) master = ReceiveFd(tty_ours.get());

  Report msg;
  size_t got = 0;
  while (got < sizeof(msg)) {
    ssize_t n = ::read(rep_r.get(), reinterpret_cast<char*>(&msg) + got, sizeof(msg) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > 0) {
    Reap(pid);
    if (got < sizeof(msg)) return Internal("exec " + args[0] + ": child failed before exec");
    return ErrnoStatus(msg.err, Describe(msg, proc, cwd, opt.init));
  }
  Spawned s;
  s.pid = pid;
  if (proc.terminal()) {
    if (!master) {
      ::kill(pid, SIGKILL);
      Reap(pid);
      return Internal("container " + args[0] + ": the init sent no terminal");
    }
    SetNonBlocking(master.get());  // one open file: the dups share it
    UniqueFd in(::fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    UniqueFd tty(::fcntl(master.get(), F_DUPFD_CLOEXEC, 3));
    if (!in || !tty) {
      int e = errno;
      ::kill(pid, SIGKILL);
      Reap(pid);
      return ErrnoStatus(e, "dup the pty master");
    }
    s.in = std::move(in);
    s.tty = std::move(tty);
    s.out = std::move(master);
    return s;
  }
  SetNonBlocking(in_w.get());
  SetNonBlocking(out_r.get());
  SetNonBlocking(err_r.get());
  s.in = std::move(in_w);
  s.out = std::move(out_r);
  s.err = std::move(err_r);
  return s;
}

}  // namespace vmf::agent
