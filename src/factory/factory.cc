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
  TemplateFactory(VMConfig base, std::string root, const VmDeps& deps)
      : base_(std::move(base)), root_(std::move(root)), deps_(deps), direct_(base_, deps) {}

  Result<Acquired> GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) override {
    // Re-read the template every time: it may have been destroyed or
    // replaced, and no clone is attempted from a bad one.
    VMF_ASSIGN_OR_RETURN(TemplateInfo t, LoadTemplate(root_));
    if (Status why = TemplateMismatch(t, request); !why.ok()) {
      spdlog::info("template cannot serve this request ({}); cold boot", why.message());
      return direct_.GetVM(request, times, cancel);
    }
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
    return s;
  }
  void Close() override {}

 private:
  VMConfig base_;
  std::string root_;
  VmDeps deps_;
  DirectFactory direct_;
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
                                                    const VmDeps& deps) {
  VMF_RETURN_IF_ERROR(LoadTemplate(root).status());
  return std::unique_ptr<Factory>(new TemplateFactory(std::move(base), root, deps));
}

Status PrepareForHandOut(VM& vm) {
  VMF_RETURN_IF_ERROR(vm.ReseedRNG().WithContext("reseed"));
  VMF_RETURN_IF_ERROR(vm.SyncClock().WithContext("set clock"));
  return NameAfterId(vm);
}

Result<std::unique_ptr<VM>> CloneFromTemplate(const TemplateInfo& t, const VMConfig& request,
                                              StepTimes* times, CancelToken* cancel, const VmDeps& deps) {
  VMConfig config = CloneConfig(t, request);
  // 1. The VM process waiting for its state, and the proxy; not running yet.
  VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(config, times, cancel, deps));
  StepTimer timer(times);
  // 2. Load the saved device state (RAM is the template's file, mapped
  //    copy-on-write) and let it run; the agent carries on where it was.
  VMF_RETURN_IF_ERROR(vm->Start());
  timer.Done("restore + resume");
  VMF_RETURN_IF_ERROR(vm->WithCauses(vm->agent().WaitReady(Deadline(std::chrono::seconds(30)))));
  timer.Done("agent ready");
  // 3. Siblings must not share randomness, a stale clock or a name.
  VMF_RETURN_IF_ERROR(PrepareForHandOut(*vm));
  timer.Done("reseed, clock, hostname");
  // 4. Up to the size asked.
  VMF_ASSIGN_OR_RETURN(bool grew, vm->GrowTo(request.hypervisor.vcpus, request.hypervisor.memory_mib));
  if (grew) timer.Done("hotplug");
  return vm;
}

}  // namespace vmf
