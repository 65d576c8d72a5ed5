#include "proxy/syscall_filter.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace vmf {

Status InstallProxySyscallFilter() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ErrnoStatus(errno, "no_new_privs");
  std::unique_ptr<void, void (*)(scmp_filter_ctx)> ctx(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
  if (!ctx) return Internal("seccomp_init failed");
  static const char* const kKilled[] = {
      "execve",
      "execveat",
      "fork",
      "vfork",
      "ptrace",
      "process_vm_readv",
      "process_vm_writev",
      "mount",
      "umount2",
      "pivot_root",
      "chroot",
      "unshare",
      "setns",
      "setuid",
      "setgid",
      "setreuid",
      "setregid",
      "setresuid",
      "setresgid",
      "setgroups",
      "setfsuid",
      "setfsgid",
      "capset",
      "init_module",
      "finit_module",
      "delete_module",
      "kexec_load",
      "kexec_file_load",
      "bpf",
      "perf_event_open",
      "keyctl",
      "add_key",
      "request_key",
      "personality",
      "userfaultfd",
      "open_by_handle_at",
      "name_to_handle_at",
      "reboot",
      "swapon",
      "swapoff",
      "acct",
      "quotactl",
      "syslog",
      "iopl",
      "ioperm",
      "mknod",
      "mknodat",
      "fanotify_init",
      "move_mount",
      "fsopen",
      "fsmount",
      "open_tree",
      "io_uring_setup",
  };
  for (const char* name : kKilled) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_KILL_PROCESS, nr, 0); rc != 0) {
      return Internal(std::string("seccomp rule for ") + name + ": " + std::strerror(-rc));
    }
  }
  // Threads are fine (asio's), new processes are not: clone without
  // CLONE_THREAD kills; clone3 answers ENOSYS so that libc falls back to clone.
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
                                SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
      rc != 0) {
    return Internal(std::string("seccomp rule for clone: ") + std::strerror(-rc));
  }
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc != 0) {
    return Internal(std::string("seccomp rule for clone3: ") + std::strerror(-rc));
  }
  if (int rc = seccomp_load(ctx.get()); rc != 0) {
    return Internal(std::string("seccomp_load: ") + std::strerror(-rc));
  }
  return OkStatus();
}

}  // namespace vmf
