#include "vm/handle.h"

namespace vmf {

void VMHandle::ToProto(vmfactory::v1::VM* out) const {
  out->set_id(id);
  out->set_runtime_dir(runtime_dir);
  out->set_backend(backend);
  out->set_control_endpoint(control_endpoint);
  out->set_proxy_url(proxy_url);
  out->set_vmm_pid(vmm_pid);
  out->set_proxy_pid(proxy_pid);
  out->set_cpus(cpus);
  out->set_memory_mib(memory_mib);
  out->set_uid(uid);
  for (const auto& d : cgroup_dirs) out->add_cgroup_dirs(d);
}

VMHandle VMHandle::FromProto(const vmfactory::v1::VM& vm) {
  VMHandle h;
  h.id = vm.id();
  h.runtime_dir = vm.runtime_dir();
  h.backend = vm.backend().empty() ? "qemu" : vm.backend();
  h.control_endpoint = vm.control_endpoint();
  h.proxy_url = vm.proxy_url();
  h.vmm_pid = vm.vmm_pid();
  h.proxy_pid = vm.proxy_pid();
  h.cpus = vm.cpus();
  h.memory_mib = vm.memory_mib();
  h.uid = vm.uid();
  h.cgroup_dirs.assign(vm.cgroup_dirs().begin(), vm.cgroup_dirs().end());
  return h;
}

nlohmann::json VMHandle::ToJson() const {
  return {{"id", id},
          {"runtime_dir", runtime_dir},
          {"backend", backend},
          {"control_endpoint", control_endpoint},
          {"proxy_url", proxy_url},
          {"vmm_pid", vmm_pid},
          {"proxy_pid", proxy_pid},
          {"cpus", cpus},
          {"memory_mib", memory_mib},
          {"uid", uid},
          {"cgroup_dirs", cgroup_dirs}};
}

Result<VMHandle> VMHandle::FromJson(const nlohmann::json& j, const std::string& what) {
  VMHandle h;
  try {
    h.id = j.at("id").get<std::string>();
    h.runtime_dir = j.at("runtime_dir").get<std::string>();
    h.backend = j.at("backend").get<std::string>();
    h.control_endpoint = j.at("control_endpoint").get<std::string>();
    h.proxy_url = j.at("proxy_url").get<std::string>();
    h.vmm_pid = j.at("vmm_pid").get<pid_t>();
    h.proxy_pid = j.at("proxy_pid").get<pid_t>();
    h.cpus = j.at("cpus").get<uint32_t>();
    h.memory_mib = j.at("memory_mib").get<uint32_t>();
    h.uid = j.value("uid", uint32_t{0});
    // Absent in the records of a daemon from before cgroups.
    if (j.contains("cgroup_dirs")) h.cgroup_dirs = j.at("cgroup_dirs").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(what + ": bad VM handle: " + e.what());
  }
  return h;
}

}  // namespace vmf
