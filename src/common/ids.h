// The one rule for the ids the host and the guest take from outside (VM,
// sandbox, container and exec ids): 1-64 of [A-Za-z0-9_.-], not starting
// with '.' or '-', so that an id is always safe as a path component.
// Header-only: the guest agent uses it too.
#pragma once

#include <string>

#include "common/status.h"

namespace vmf {

inline Status ValidateId(const std::string& what, const std::string& id) {
  if (id.empty()) return InvalidArgument(what + " is empty");
  if (id.size() > 64)
    return InvalidArgument(what + " '" + id.substr(0, 64) + "...' is longer than 64 characters");
  if (id[0] == '.' || id[0] == '-')
    return InvalidArgument(what + " '" + id + "' must not start with '.' or '-'");
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.';
    if (!ok)
      return InvalidArgument(what + " '" + id + "' may only contain letters, digits, '_', '-' and '.'");
  }
  return OkStatus();
}

}  // namespace vmf
