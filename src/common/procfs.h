// /proc parsing, in one place: a process's state and start time from
// /proc/PID/stat, its argv from /proc/PID/cmdline, the pids there are, and
// memory figures (smaps_rollup, status).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace vmf {

struct ProcStat {
  char state = '?';         // R, S, D, Z (zombie), X (dead), ...
  uint64_t start_time = 0;  // clock ticks since boot: tells a process from a later one with its pid
};

// nullopt if the process is gone or its stat cannot be parsed.
std::optional<ProcStat> ReadProcStat(pid_t pid);
// Its argv; empty if gone or a zombie.
std::vector<std::string> ProcessArgv(pid_t pid);
// Every pid in /proc, with the uid that owns it.
struct ProcEntry {
  pid_t pid;
  uid_t uid;
};
std::vector<ProcEntry> ListProcesses();

// The number of a "Key:   N kB" line of a /proc file (smaps_rollup's Pss:,
// status's VmRSS:), in kB.
Result<uint64_t> ReadKbLine(const std::string& path, const std::string& key);
// A process's proportional set size (smaps_rollup), in bytes.
Result<uint64_t> ProcessPssBytes(pid_t pid);

}  // namespace vmf
