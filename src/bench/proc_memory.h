// A "Key:   N kB" line of a /proc file (smaps_rollup's Pss:, status's VmRSS:).
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "common/status.h"

namespace vmf {

inline Result<uint64_t> ReadKbLine(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus(errno, "open " + path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) != 0) continue;
    std::istringstream fields(line.substr(key.size()));
    uint64_t kb = 0;
    if (fields >> kb) return kb;
    return DataLoss("cannot parse \"" + line + "\" in " + path);
  }
  return NotFound("no " + key + " line in " + path);
}

}  // namespace vmf
