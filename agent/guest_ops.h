// GuestOps: guest management asked for by the host: onlining hot-plugged
// CPUs and memory, reseeding the kernel RNG, setting the clock and the
// hostname, and the memory facts for GetGuestDetails. Every sysfs path is
// rooted at Options::sysfs_root and the RNG device is Options::random_device,
// so tests run all of it against a temporary directory.
//
// Bounds on the host's requests: OnlineCPUMem onlines at most the CPUs asked
// for and waits at most Options::online_wait for them; a time must have
// sec >= 0 and 0 <= usec < 1000000; a hostname at most 64 bytes with no NUL;
// a seed must not be empty (its size is bounded by the ttrpc frame limit).
// The sysfs files read are small: at most 256 bytes of each are looked at.
//
// Host-safe mode (Options::allow_system_changes = false) checks clock and
// hostname requests and then answers OK without changing anything.
//
//   GuestOps ops(GuestOps::Options{.sysfs_root = "/sys"});
//   Status st = ops.OnlineCpuMem(/*nb_cpus=*/2, /*wait=*/true, /*cpu_only=*/true);
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace vmf::agent {

class GuestOps {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::string sysfs_root = "/sys";
    std::string random_device = "/dev/random";
    // How long OnlineCpuMem with wait=true waits for the CPUs asked for.
    std::chrono::milliseconds online_wait{2000};
    bool allow_system_changes = true;
    // The machine's identity, renewed after each reseed (RenewIdentity).
    std::string machine_id_path = "/etc/machine-id";
    std::string boot_id_path = "/proc/sys/kernel/random/boot_id";
  };

  struct MemoryDetails {
    uint64_t block_size_bytes = 0;  // 0: not asked for, or unreadable
    bool hotplug_probe = false;     // <sysfs>/devices/system/memory/probe exists
  };

  explicit GuestOps(Options options) : opt_(std::move(options)) {}

  // Writes "1" to each offline cpuN/online, in number order, until nb_cpus
  // were onlined (0: all), and unless cpu_only "online" to each offline
  // memoryN/state. With wait, retries every 20 ms until nb_cpus were onlined
  // or online_wait passed (then DEADLINE_EXCEEDED).
  Status OnlineCpuMem(uint32_t nb_cpus, bool wait, bool cpu_only) const;
  // Adds data to the entropy pool (credited fully) and reseeds the CRNG.
  Status ReseedRandom(std::string_view data) const;
  // Makes this guest a machine of its own after a reseed (a clone of a
  // template, handed out): a new machine-id from the reseeded CRNG, and the
  // kernel's boot_id drawn now if it was not yet (the kernel makes it on
  // its first read, so it must not be read before the reseed). Nothing is
  // changed in host-safe mode.
  Status RenewIdentity() const;
  MemoryDetails Memory(bool want_block_size) const;
  Status SetClock(int64_t sec, int64_t usec) const;
  // An empty hostname is accepted and changes nothing.
  Status SetHostname(std::string_view host) const;

 private:
  Options opt_;
};

// Writes a new machine-id (32 lowercase hex digits and a newline, mode
// 0444) to path, atomically, from getrandom(2) with `getrandom_flags`
// (GRND_INSECURE at boot, where the CRNG may not be ready yet).
Status WriteMachineId(const std::string& path, unsigned getrandom_flags);

// Small-file helpers for sysfs.
// Reads at most 256 bytes of path, without trailing newlines and spaces.
bool ReadSmallFile(const std::string& path, std::string* out);
Status WriteSmallFile(const std::string& path, std::string_view data);
// Names "<prefix><digits>" in dir, sorted by number ("cpu2" before "cpu10").
std::vector<std::string> NumberedEntries(const std::string& dir, std::string_view prefix);

}  // namespace vmf::agent
