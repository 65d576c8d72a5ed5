// Factory: where VMs come from. GetVM(config) returns a VM that is running
// with its agent answering, sized as asked, and which source made it:
//   cold boot - a full boot every time (NewDirectFactory);
//   template  - a copy-on-write clone of a saved template, hot-plugged up to
//               the size asked, falling back to a cold boot for requests the
//               template cannot serve (another kernel, machine, ...);
//   pool      - a VM booted ahead of time (VMCache, factory/cache.h).
// Used by the CLI, the daemon and, later, a containerd shim.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/cancel.h"
#include "factory/restore_targets.h"
#include "factory/template.h"
#include "vm/vm.h"

namespace vmf {

enum class VmSource { kPool, kTemplate, kColdBoot };

// "cache", "template", "direct": the names the daemon's API, metrics and
// `status` use.
std::string_view SourceName(VmSource source);

struct Acquired {
  std::unique_ptr<VM> vm;
  VmSource source = VmSource::kColdBoot;
};

// A pool's state, for `status`, the metrics and the bench.
struct PoolState {
  int target = 0;
  std::vector<VMHandle> ready;
  int booting = 0;
  uint64_t failures = 0;
  uint64_t replaced = 0;
  std::string last_error;
  Duration retry_in{0};
};

struct FactoryState {
  VmSource base = VmSource::kColdBoot;        // what makes VMs when the pool (if any) cannot
  std::string template_root;                  // template: where it is
  std::string template_generation;            // template: the generation in use, if it loads
  std::string template_error;                 // template: why it does not load, if it does not
  std::optional<PoolState> pool;              // set when there is a pool
  std::optional<RestoreTargetState> restore;  // template: set when it keeps restore targets
};

class Factory {
 public:
  virtual ~Factory() = default;
  virtual Result<Acquired> GetVM(const VMConfig& request, StepTimes* times = nullptr,
                                 CancelToken* cancel = nullptr) = 0;
  // The config VMs are made from when the caller has no preference.
  virtual const VMConfig& Config() const = 0;
  virtual FactoryState State() const = 0;
  virtual void Close() = 0;
};

std::unique_ptr<Factory> NewDirectFactory(VMConfig base, const VmDeps& deps = {});
// Loads (and checks) the template at root; fails if there is none or it is
// bad. With restore.target > 0 it keeps that many clones of `base` started
// and waiting for their state (RestoreTargets), and a request they fit
// takes one instead of starting QEMU.
Result<std::unique_ptr<Factory>> NewTemplateFactory(VMConfig base, const std::string& root,
                                                    const VmDeps& deps = {},
                                                    const RestoreTargetOptions& restore = {});

// Gets a clone of the template ready to hand out: StartClone, then
// FinishClone.
Result<std::unique_ptr<VM>> CloneFromTemplate(const TemplateInfo& t, const VMConfig& request,
                                              StepTimes* times, CancelToken* cancel, const VmDeps& deps = {});
// A clone's first half: its VM process waiting for the template's state,
// its proxy and agent connection (what a restore target is).
Result<std::unique_ptr<VM>> StartClone(const TemplateInfo& t, const VMConfig& request, StepTimes* times,
                                       CancelToken* cancel, const VmDeps& deps = {});
// Its second half: restore, resume, agent ready, fresh randomness, the
// host's clock, its own hostname (the VM id), then hotplug up to the
// request's size.
Status FinishClone(VM& vm, const VMConfig& request, StepTimes* times);
// The steps every VM goes through before it is handed out from a template
// or a pool: reseed, clock, hostname.
Status PrepareForHandOut(VM& vm);

}  // namespace vmf
