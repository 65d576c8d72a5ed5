#include "factory/factory.h"

#include <ctime>

#include "common/log.h"

namespace vmf {
namespace {

// Every VM a factory hands out is named after its id.
Status NameAfterId(VM& vm) {
  return vm.Diagnose(vm.agent().SetHostname(vm.id())).WithContext("set hostname");
}

class DirectFactory : public Factory {
 public:
  explicit DirectFactory(VMConfig base) : base_(std::move(base)) {}
  Result<std::unique_ptr<VM>> GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) override {
    VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(request, times, cancel));
    // A fresh boot has its own randomness and reads the clock itself.
    StepTimer timer(times);
    VMF_RETURN_IF_ERROR(NameAfterId(*vm));
    timer.Done("hostname");
    return vm;
  }
  const VMConfig& Config() const override { return base_; }
  nlohmann::json Status() override { return {{"source", "direct"}}; }
  void Close() override {}

 private:
  VMConfig base_;
};

class TemplateFactory : public Factory {
 public:
  TemplateFactory(VMConfig base, std::string root)
      : base_(std::move(base)), root_(std::move(root)), direct_(base_) {}

  Result<std::unique_ptr<VM>> GetVM(const VMConfig& request, StepTimes* times, CancelToken* cancel) override {
    // Re-read the template every time: it may have been destroyed or
    // replaced, and no clone is attempted from a bad one.
    VMF_ASSIGN_OR_RETURN(TemplateInfo t, LoadTemplate(root_));
    std::string why = TemplateMismatch(t, request);
    if (!why.empty()) {
      spdlog::info("template cannot serve this request ({}); cold boot", why);
      return direct_.GetVM(request, times, cancel);
    }
    return CloneFromTemplate(t, request, times, cancel);
  }
  const VMConfig& Config() const override { return base_; }
  nlohmann::json Status() override {
    nlohmann::json j = {{"source", "template"}, {"path", root_}};
    auto t = LoadTemplate(root_);
    if (t.ok()) {
      j["generation"] = t->generation;
      j["vcpus"] = t->hypervisor.vcpus;
      j["memory_mib"] = t->hypervisor.memory_mib;
    } else {
      j["error"] = t.status().ToString();
    }
    return j;
  }
  void Close() override {}

 private:
  VMConfig base_;
  std::string root_;
  DirectFactory direct_;
};

}  // namespace

std::unique_ptr<Factory> NewDirectFactory(VMConfig base) {
  return std::make_unique<DirectFactory>(std::move(base));
}

Result<std::unique_ptr<Factory>> NewTemplateFactory(VMConfig base, const std::string& root) {
  VMF_RETURN_IF_ERROR(LoadTemplate(root).status());
  return std::unique_ptr<Factory>(new TemplateFactory(std::move(base), root));
}

Status PrepareForHandOut(VM& vm) {
  VMF_RETURN_IF_ERROR(vm.ReseedRNG().WithContext("reseed"));
  VMF_RETURN_IF_ERROR(vm.SyncClock().WithContext("set clock"));
  return NameAfterId(vm);
}

Result<std::unique_ptr<VM>> CloneFromTemplate(const TemplateInfo& t, const VMConfig& request,
                                              StepTimes* times, CancelToken* cancel) {
  VMConfig config = CloneConfig(t, request);
  // QEMU with -incoming and the proxy; the clone is not running yet.
  VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(config, times, cancel));
  StepTimer timer(times);
  // Load the saved device state (RAM is the template's file, mapped
  // copy-on-write) and let it run; the agent carries on where it was.
  VMF_RETURN_IF_ERROR(vm->Start());
  timer.Done("restore + resume");
  VMF_RETURN_IF_ERROR(vm->Diagnose(vm->agent().WaitReady(Deadline(std::chrono::seconds(30)))));
  timer.Done("agent ready");
  // Siblings must not share randomness, a stale clock or a name.
  VMF_RETURN_IF_ERROR(PrepareForHandOut(*vm));
  timer.Done("reseed, clock, hostname");
  VMF_ASSIGN_OR_RETURN(bool grew, vm->GrowTo(request.hypervisor.vcpus, request.hypervisor.memory_mib));
  if (grew) timer.Done("hotplug");
  return vm;
}

}  // namespace vmf
