#include "daemon/request.h"

#include "factory.pb.h"

namespace vmf {

Result<VMConfig> DecodeGetVMRequest(const std::string& payload, const VMConfig& base,
                                    const HypervisorBackend* backend) {
  vmfactory::v1::GetVMRequest req;
  if (!req.ParseFromString(payload)) return InvalidArgument("malformed GetVMRequest");
  VMConfig request = base;
  if (req.cpus() > 0) request.hypervisor.vcpus = req.cpus();
  if (req.memory_mib() > 0) request.hypervisor.memory_mib = req.memory_mib();
  FitCeilings(&request.hypervisor);
  VMF_RETURN_IF_ERROR(request.Validate(backend));
  return request;
}

}  // namespace vmf
