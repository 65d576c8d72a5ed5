// AcquireVM: a VM the way `vmfactory run` and the containerd shim get one:
// from a running daemon's pool, else a template clone, else a cold boot.
#pragma once

#include <memory>
#include <string>

#include "common/cancel.h"
#include "common/clock.h"
#include "common/status.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf {

struct AcquireOptions {
  VMConfig config;
  bool verbose = false;       // say on stderr where the VM came from
  bool cold = false;          // never use the daemon or the template
  std::string template_root;  // where the template is looked for
  std::string daemon_socket;  // "" = the default; used when a daemon listens there
};

// The VM is sized as opts.config says (a pool VM of another size is grown
// by the daemon or refused). A template that exists but cannot be used is
// an error, not a silent cold boot. `steps` (may be null) gets the timings.
Result<std::unique_ptr<VM>> AcquireVM(const AcquireOptions& opts, StepTimes* steps, CancelToken* cancel);

}  // namespace vmf
