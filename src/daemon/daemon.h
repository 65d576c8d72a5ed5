// The factory daemon (`vmfactory serve`): keeps a pool of ready VMs and
// hands them to other processes over a ttrpc API on a unix socket.
//
// A VM handed out is the client's: it gets QEMU's QMP socket, the proxy URL
// and the pids, and the VM keeps running if the daemon restarts. The daemon
// remembers each VM's owner (the peer process of the request, from
// SO_PEERCRED) and stops the VM if the owner exits without stopping it.
#pragma once

#include <string>

#include "common/cancel.h"
#include "common/status.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf {

struct DaemonOptions {
  VMConfig vm;               // the size and image of pooled VMs
  std::string socket_path;   // the API socket (0600)
  int cache_number = 2;      // pooled VMs kept ready; 0: no pool
  int parallelism = 1;       // concurrent refills
  int restore_targets = 0;   // template clones kept started, waiting for their state
  bool use_template = true;  // clone from the template when one exists
  std::string template_path;
  std::string metrics_address;  // "host:port" for Prometheus text; "" off
  Duration owner_check_interval = std::chrono::milliseconds(200);
  VmDeps deps;  // what VMs are made with (unit tests: fakes)
};

// Serves until `stop` is cancelled (SIGTERM/SIGINT) or a client calls Quit.
// Pooled VMs are stopped and the socket removed on the way out.
Status RunDaemon(const DaemonOptions& opts, CancelToken* stop);

}  // namespace vmf
