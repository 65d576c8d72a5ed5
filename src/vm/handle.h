// VMHandle: everything another process needs to take a running VM over,
// and its one conversion each to the daemon's wire form and to the JSON of
// the daemon's records.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "factory.pb.h"

namespace vmf {

struct VMHandle {
  std::string id;
  std::string runtime_dir;       // the VM's own dir (sockets, logs)
  std::string backend;           // the hypervisor backend ("qemu")
  std::string control_endpoint;  // the backend's control channel (QEMU: its QMP socket)
  std::string proxy_url;
  pid_t vmm_pid = -1;  // the VM process (QEMU)
  pid_t proxy_pid = -1;
  uint32_t cpus = 0;
  uint32_t memory_mib = 0;
  uint32_t uid = 0;  // the VM's leased uid; 0: none
  // The VM's cgroup dirs (common/cgroup.h); empty when it has none.
  std::vector<std::string> cgroup_dirs;

  void ToProto(vmfactory::v1::VM* out) const;
  static VMHandle FromProto(const vmfactory::v1::VM& vm);
  nlohmann::json ToJson() const;
  // DATA_LOSS naming `what` if a field is missing or of the wrong type.
  static Result<VMHandle> FromJson(const nlohmann::json& j, const std::string& what);
};

}  // namespace vmf
