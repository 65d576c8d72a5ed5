// The proxy's seccomp filter: it only moves bytes between sockets and a log
// file, so everything that starts programs, changes identity, namespaces or
// mounts, loads code into the kernel or reads other processes kills it.
#pragma once

#include "common/status.h"

namespace vmf {

// Installs the filter on the calling process (all its threads made later
// inherit it); sets no_new_privs first.
Status InstallProxySyscallFilter();

}  // namespace vmf
