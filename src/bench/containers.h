// The container mode of `vmfactory bench` ("containers"): what a user of
// containerd times. On a private containerd of the bench's own (its own
// root, state and sockets; bench/private_containerd.h) and an image built
// offline, `ctr run --rm IMAGE ID /bin/true` from its start to its exit:
//
//   runc      - containerd's own runtime, the baseline;
//   pool      - containerd-shim-vmfactory-v2 with a VM from the bench's
//               daemon (pool of 2, full before each sample);
//   template  - the shim with a clone of the bench's template;
//   cold      - the shim with a cold boot (no template, no daemon).
//
// Plus the memory of one pod: the shim's resident set beside its VM's QEMU
// (RSS and PSS), with a container running. Each vmfactory source gets its
// config through `ctr run --runtime-config-path`, as a user would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/cancel.h"
#include "common/clock.h"
#include "common/status.h"
#include "vm/config.h"

namespace vmf {

struct ContainerBenchOptions {
  std::string dir;            // private to the bench: containerd, configs, VMs
  std::string template_root;  // the bench's template ("template" and "pool")
  VMConfig config;            // kernel, initrd and size of the VMs
  int iterations = 5;
};

struct ContainerSourceResult {
  std::string source;  // runc, pool, template, cold
  Status status;
  std::vector<Duration> samples;
  Duration p50{0};
  Duration p95{0};
};

struct ContainerBenchResult {
  Status status;  // no containerd, ctr or runc, or not root: nothing measured
  std::vector<ContainerSourceResult> sources;
  Status memory_status;
  uint64_t shim_rss_kib = 0;
  uint64_t qemu_rss_kib = 0;
  uint64_t qemu_pss_kib = 0;
};

ContainerBenchResult MeasureContainers(const ContainerBenchOptions& options, CancelToken* cancel);

}  // namespace vmf
