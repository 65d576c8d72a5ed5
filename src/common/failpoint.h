// Fail points: named places in the VM life cycle where a test (or the soak
// run) can inject a fault, such as SIGKILL of QEMU or of the proxy, exactly
// at that stage. A test seam: without a hook installed, Hit() is one atomic
// load and does nothing.
//
//   failpoint::SetHook([](std::string_view point, const failpoint::Target& t) {
//     if (point == failpoint::kVmHotplug) ::kill(t.vmm_pid, SIGKILL);
//   });
//
// Points (each fired just before the step it names):
//   vm.boot       cold boot: QEMU and the proxy run, the agent is awaited
//   vm.restore    a clone is about to restore the template's state
//   vm.hotplug    vCPUs or memory are about to be hot-added
//   template.save the template VM is booted and about to be paused and saved
//
// VMF_FAILPOINTS="vm.restore=qemu:0.1,vm.hotplug=proxy:0.05" installs a hook
// that SIGKILLs QEMU or the proxy at that point with that probability; the
// daemon and the CLI read it at start (for soak runs, never in production).
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace vmf::failpoint {

inline constexpr std::string_view kVmBoot = "vm.boot";
inline constexpr std::string_view kVmRestore = "vm.restore";
inline constexpr std::string_view kVmHotplug = "vm.hotplug";
inline constexpr std::string_view kTemplateSave = "template.save";

struct Target {
  std::string_view vm_id;
  pid_t vmm_pid = -1;
  pid_t proxy_pid = -1;
};

using Hook = std::function<void(std::string_view point, const Target& target)>;

// Installs (or, with nullptr, removes) the process-wide hook.
void SetHook(Hook hook);
// Calls the hook, if any.
void Hit(std::string_view point, const Target& target);

// "SIGKILL of QEMU (pid N)" / "SIGKILL of the proxy (pid N)": how the
// VMF_FAILPOINTS hook logs each kill, so that a reader of the log (the soak
// run) can tell an injected death from a real one.
std::string DescribeKill(bool qemu, pid_t pid);

// Parses a VMF_FAILPOINTS value and installs a hook for it. Errors name the
// bad entry. An empty spec removes the hook.
Status InstallFromSpec(const std::string& spec);
// InstallFromSpec($VMF_FAILPOINTS) if the variable is set.
Status InstallFromEnv();

}  // namespace vmf::failpoint
