// Factory: where VMs come from. GetVM(config) returns a VM that is running
// with its agent answering, sized as asked. Sources:
//   direct   - a cold boot every time;
//   template - a copy-on-write clone of a saved template, hot-plugged up to
//              the size asked, falling back to a cold boot for requests the
//              template cannot serve (another kernel, machine, ...).
// Used by the CLI, the daemon and, later, a containerd shim.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/cancel.h"
#include "factory/template.h"
#include "vm/vm.h"

namespace vmf {

class Factory {
 public:
  virtual ~Factory() = default;
  virtual Result<std::unique_ptr<VM>> GetVM(const VMConfig& request, StepTimes* times = nullptr,
                                            CancelToken* cancel = nullptr) = 0;
  // The config VMs are made from when the caller has no preference.
  virtual const VMConfig& Config() const = 0;
  // A description of the source and its state, for `status` and the daemon.
  virtual nlohmann::json Status() = 0;
  virtual void Close() = 0;
};

std::unique_ptr<Factory> NewDirectFactory(VMConfig base);
// Loads (and checks) the template at root; fails if there is none or it is bad.
Result<std::unique_ptr<Factory>> NewTemplateFactory(VMConfig base, const std::string& root);

// Gets a clone of the template ready to hand out: restore, resume, agent
// ready, fresh randomness, the host's clock, its own hostname (the VM id),
// then hotplug up to the request's size. Exposed for the cache's refills.
Result<std::unique_ptr<VM>> CloneFromTemplate(const TemplateInfo& t, const VMConfig& request,
                                              StepTimes* times, CancelToken* cancel);
// The steps every VM goes through before it is handed out from a template
// or a pool: resume if paused, reseed, clock, hostname.
Status PrepareForHandOut(VM& vm);

}  // namespace vmf
