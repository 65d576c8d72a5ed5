#include "daemon/acquire.h"

#include <cstdio>

#include "daemon/client.h"
#include "factory/factory.h"

namespace vmf {

Result<std::unique_ptr<VM>> AcquireVM(const AcquireOptions& opts, StepTimes* steps, CancelToken* cancel) {
  if (!opts.cold) {
    // 1. A running daemon's pool.
    std::string sock =
        opts.daemon_socket.empty() ? DefaultDaemonSocket(DefaultRuntimeDir()) : opts.daemon_socket;
    if (auto daemon = DaemonClient::Connect(sock); daemon.ok()) {
      StepTimer timer(steps);
      VMF_ASSIGN_OR_RETURN(auto handed,
                           (*daemon)->GetVM(opts.config.hypervisor.vcpus, opts.config.hypervisor.memory_mib,
                                            Deadline(opts.config.agent.boot_timeout)));
      timer.Done("daemon GetVM (" + handed.source() + ")");
      if (opts.verbose)
        std::fprintf(stderr, "vmfactory: source: daemon at %s, %s\n", sock.c_str(), handed.source().c_str());
      VMF_ASSIGN_OR_RETURN(auto vm, VM::Attach(VMHandle::FromProto(handed), opts.config));
      vm->KillOnCancel(cancel);
      timer.Done("attach");
      return vm;
    }
    // 2. The template, when there is one. A bad template is an error rather
    //    than a silent cold boot, so that it gets fixed.
    auto t = NewTemplateFactory(opts.config, opts.template_root);
    if (t.ok()) {
      if (opts.verbose)
        std::fprintf(stderr, "vmfactory: source: template at %s\n", opts.template_root.c_str());
      VMF_ASSIGN_OR_RETURN(Acquired got, (*t)->GetVM(opts.config, steps, cancel));
      return std::move(got.vm);
    }
    // NOT_FOUND is "no template here"; anything else is a broken one.
    if (t.status().code() != Code::kNotFound) {
      return t.status().WithContext(
          "the template is not usable (recreate it with `vmfactory init --force`, or use --cold)");
    }
  }
  // 3. A cold boot.
  if (opts.verbose) std::fprintf(stderr, "vmfactory: source: cold boot\n");
  VMF_ASSIGN_OR_RETURN(Acquired got, NewDirectFactory(opts.config)->GetVM(opts.config, steps, cancel));
  return std::move(got.vm);
}

}  // namespace vmf
