#include "common/procfs.h"

#include <sys/stat.h>

#include <filesystem>
#include <sstream>

#include "common/io.h"

namespace vmf {

std::optional<ProcStat> ReadProcStat(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  auto text = ReadFile("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text.ok()) return std::nullopt;
  // "pid (comm) S ppid ...": comm may hold spaces and ')', so fields are
  // counted from the last ')'. Field 3 is the state, field 22 the start time.
  auto close = text->rfind(')');
  if (close == std::string::npos || close + 2 >= text->size()) return std::nullopt;
  std::istringstream rest(text->substr(close + 2));
  ProcStat st;
  std::string field;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 3) st.state = field.empty() ? '?' : field[0];
    if (i == 22) {
      try {
        st.start_time = std::stoull(field);
      } catch (const std::exception&) {
        return std::nullopt;
      }
      return st;
    }
  }
  return std::nullopt;
}

std::vector<std::string> ProcessArgv(pid_t pid) {
  std::vector<std::string> argv;
  auto raw = ReadFile("/proc/" + std::to_string(pid) + "/cmdline", 1 << 20);
  if (!raw.ok()) return argv;
  std::string cur;
  for (char c : *raw) {
    if (c == '\0') {
      argv.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) argv.push_back(cur);
  return argv;
}

std::vector<ProcEntry> ListProcesses() {
  std::vector<ProcEntry> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    struct stat st {};
    if (::stat(e.path().c_str(), &st) != 0) continue;
    out.push_back({static_cast<pid_t>(std::stol(name)), st.st_uid});
  }
  return out;
}

Result<uint64_t> ReadKbLine(const std::string& path, const std::string& key) {
  VMF_ASSIGN_OR_RETURN(const std::string text, ReadFile(path, 1 << 20));
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream fields(line.substr(key.size()));
    uint64_t kb = 0;
    if (fields >> kb) return kb;
    return DataLoss("cannot parse \"" + line + "\" in " + path);
  }
  return NotFound("no " + key + " line in " + path);
}

Result<uint64_t> ProcessPssBytes(pid_t pid) {
  VMF_ASSIGN_OR_RETURN(const uint64_t kb,
                       ReadKbLine("/proc/" + std::to_string(pid) + "/smaps_rollup", "Pss:"));
  return kb << 10;
}

}  // namespace vmf
