#include "factory/factory.h"

#include <spdlog/spdlog.h>

namespace vmf {
namespace {

// Every VM a factory hands out is named after its id.
Status NameAfterId(VM& vm) {
  return vm.WithCauses(vm.agent().SetHostname(vm.id())).WithContext("set hostname");
}

class DirectFactory : public Factory {
 public:
  DirectFactory(VMConfig base, const VmDeps& deps) : base_(std::move(base)), deps_(deps) {}
  Result<Acquired> GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) override {
    VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(request, times, cancel, deps_));
    // A fresh boot has its own randomness and reads the clock itself.
    StepTimer timer(times);
    VMF_RETURN_IF_ERROR(NameAfterId(*vm));
    timer.Done("hostname");
    return Acquired{std::move(vm), VmSource::kColdBoot};
  }
  const VMConfig& Config() const override { return base_; }
  FactoryState State() const override {
    FactoryState s;
    s.base = VmSource::kColdBoot;
    return s;
  }
  void Close() override {}

 private:
  VMConfig base_;
  VmDeps deps_;
};

class TemplateFactory : public Factory {
 public:
  TemplateFactory(VMConfig base, std::string root, const VmDeps& deps, const RestoreTargetOptions& restore)
      : base_(std::move(base)), root_(std::move(root)), deps_(deps), direct_(base_, deps) {
    if (restore.target > 0) targets_ = std::make_unique<RestoreTargets>(base_, root_, deps_, restore);
  }

  Result<Acquired> GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) override {
    // Re-read the template every time: it may have been destroyed or
    // replaced, and no clone is attempted from a bad one.
    VMF_ASSIGN_OR_RETURN(TemplateInfo t, LoadTemplate(root_));
    if (Status why = TemplateMismatch(t, request); !why.ok()) {
      spdlog::info("template cannot serve this request ({}); cold boot", why.message());
      return direct_.GetVM(request, times, cancel);
    }
    if (auto vm = TakeTarget(t, request, times, cancel)) return Acquired{std::move(vm), VmSource::kTemplate};
    VMF_ASSIGN_OR_RETURN(auto vm, CloneFromTemplate(t, request, times, cancel, deps_));
    return Acquired{std::move(vm), VmSource::kTemplate};
  }
  const VMConfig& Config() const override { return base_; }
  FactoryState State() const override {
    FactoryState s;
    s.base = VmSource::kTemplate;
    s.template_root = root_;
    auto t = LoadTemplate(root_);
    if (t.ok()) {
      s.template_generation = t->generation;
    } else {
      s.template_error = t.status().ToString();
    }
    if (targets_) s.restore = targets_->State();
    return s;
  }
  void Close() override {
    if (targets_) targets_->Close();
  }

 private:
  // A clone finished from a waiting restore target, when one fits the
  // request; null otherwise, and when finishing it failed (the target, not
  // the request, was bad: the caller starts a clone of its own).
  std::unique_ptr<VM> TakeTarget(const TemplateInfo& t, const VMConfig& request, StepTimes* times,
                                 CancelToken* cancel) {
    // Targets are made with base_: they serve requests that differ only in
    // size (hotplug adds the rest) and live in the same runtime dir.
    if (!targets_ || request.runtime_dir != base_.runtime_dir ||
        !HypervisorMismatch(base_.hypervisor, request.hypervisor, "the restore targets").ok()) {
      return nullptr;
    }
    StepTimer timer(times);
    std::unique_ptr<VM> vm = targets_->Take(t.generation);
    if (!vm) return nullptr;
    timer.Done("restore target taken");
    vm->KillOnCancel(cancel);
    if (Status st = FinishClone(*vm, request, times); !st.ok()) {
      spdlog::warn("restore target {} failed ({}); starting a clone instead", vm->id(), st.ToString());
      if (times) times->clear();
      return nullptr;
    }
    return vm;
  }

  VMConfig base_;
  std::string root_;
  VmDeps deps_;
  DirectFactory direct_;
  std::unique_ptr<RestoreTargets> targets_;  // last: stopped before the rest goes
};

}  // namespace

std::string_view SourceName(VmSource source) {
  switch (source) {
    case VmSource::kPool:
      return "cache";
    case VmSource::kTemplate:
      return "template";
    case VmSource::kColdBoot:
      return "direct";
  }
  return "direct";
}

std::unique_ptr<Factory> NewDirectFactory(VMConfig base, const VmDeps& deps) {
  return std::make_unique<DirectFactory>(std::move(base), deps);
}

Result<std::unique_ptr<Factory>> NewTemplateFactory(VMConfig base, const std::string& root,
                                                    const VmDeps& deps, const RestoreTargetOptions& restore) {
  VMF_RETURN_IF_ERROR(LoadTemplate(root).status());
  return std::unique_ptr<Factory>(new TemplateFactory(std::move(base), root, deps, restore));
}

Status PrepareForHandOut(VM& vm) {
  VMF_RETURN_IF_ERROR(vm.ReseedRNG().WithContext("reseed"));
  VMF_RETURN_IF_ERROR(vm.SyncClock().WithContext("set clock"));
  return NameAfterId(vm);
}

Result<std::unique_ptr<VM>> StartClone(const TemplateInfo& t, const VMConfig& request, StepTimes* times,
                                       CancelToken* cancel, const VmDeps& deps) {
  // The VM process waiting for its state, and the proxy; not running yet.
  return VM::Create(CloneConfig(t, request), times, cancel, deps);
}

Status FinishClone(VM& vm, const VMConfig& request, StepTimes* times) {
  StepTimer timer(times);
  // 1. Load the saved device state (RAM is the template's file, mapped
  //    copy-on-write) and let it run; the agent carries on where it was.
  VMF_RETURN_IF_ERROR(vm.Start());
  timer.Done("restore + resume");
  VMF_RETURN_IF_ERROR(vm.WithCauses(vm.agent().WaitReady(Deadline(std::chrono::seconds(30)))));
  timer.Done("agent ready");
  // 2. Siblings must not share randomness, a stale clock or a name.
  VMF_RETURN_IF_ERROR(PrepareForHandOut(vm));
  timer.Done("reseed, clock, hostname");
  // 3. Up to the size asked.
  VMF_ASSIGN_OR_RETURN(bool grew, vm.GrowTo(request.hypervisor.vcpus, request.hypervisor.memory_mib));
  if (grew) timer.Done("hotplug");
  return OkStatus();
}

Result<std::unique_ptr<VM>> CloneFromTemplate(const TemplateInfo& t, const VMConfig& request,
                                              StepTimes* times, CancelToken* cancel, const VmDeps& deps) {
  VMF_ASSIGN_OR_RETURN(auto vm, StartClone(t, request, times, cancel, deps));
  VMF_RETURN_IF_ERROR(FinishClone(*vm, request, times));
  return vm;
}

}  // namespace vmf
