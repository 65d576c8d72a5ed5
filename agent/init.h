// PID 1 duties of the guest agent: filesystems, kernel modules, environment,
// and finding the virtio-serial port the host talks to.
//
//   InitGuest(/*pid1=*/getpid() == 1);               // mounts, modules, PATH
//   std::string name = PortNameFromCmdline(cmdline); // "agent.0" or vmf.port=
//   VMF_ASSIGN_OR_RETURN(UniqueFd port, OpenAgentPort("/sys/class/virtio-ports", "/dev", name, 10s));
//
// Children (and orphans re-parented to PID 1) are reaped by the serving loop
// (ChannelServer with reap_all_children).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/status.h"

namespace vmf::agent {

inline constexpr char kDefaultPortName[] = "agent.0";
inline constexpr char kModulesList[] = "/etc/vmfactory/modules";

// Mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /tmp, /run and
// cgroup2 on /sys/fs/cgroup.
// Failures are logged; an already mounted target is fine.
void MountFilesystems();

// Makes sure fds 0, 1 and 2 are open (on /dev/console, else /dev/null).
void EnsureStdFds();

// Loads the modules listed in list_file (one path per line, relative to
// root, in load order) with finit_module. Already loaded (EEXIST) is fine;
// a missing or failing module is logged and skipped. Returns how many loaded.
int LoadModules(const std::string& list_file, const std::string& root);

// Sets the loopback interface up (the guest has no other; containers share
// the VM's network namespace, so 127.0.0.1 is theirs too).
Status BringUpLoopback();

// Everything above, in order, plus PATH and umask. Mounts, modules and the
// loopback only when pid1.
void InitGuest(bool pid1);

// The kernel command line (/proc/cmdline), "" if unreadable.
std::string ReadCmdline();

// The value of the last KEY=VALUE word of a kernel command line, or "" when
// there is none (or it is empty).
std::string CmdlineValue(std::string_view cmdline, std::string_view key);

// The value of "vmf.port=NAME" in a kernel command line, else default_name.
std::string PortNameFromCmdline(std::string_view cmdline, std::string_view default_name = kDefaultPortName);

// The device name ("vport0p1") whose <ports_dir>/<dev>/name equals name, or
// NOT_FOUND. One scan, no waiting.
Result<std::string> FindPortDevice(const std::string& ports_dir, const std::string& name);

// Waits (polling every 10 ms, up to timeout) for the port named name to
// appear and opens <dev_dir>/<device> once, O_RDWR | O_NONBLOCK | O_CLOEXEC.
Result<UniqueFd> OpenAgentPort(const std::string& ports_dir, const std::string& dev_dir,
                               const std::string& name, std::chrono::milliseconds timeout);

// Seconds since boot (CLOCK_BOOTTIME), for log lines.
double SecondsSinceBoot();

}  // namespace vmf::agent
