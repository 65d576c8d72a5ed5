// End-to-end timing for `vmfactory bench`: the whole `vmfactory run -- true`
// process, from its start until it exits, as `time` would see it, per
// source: a cold boot (`run --cold`), a template clone, and a VM from a
// daemon's pool (a `vmfactory serve` of the bench's own, its pool full
// before each sample). Each sample checks that `run -v` reports the source
// it was meant to measure.
#pragma once

#include <string>
#include <vector>

#include "common/cancel.h"
#include "common/clock.h"
#include "common/status.h"
#include "vm/config.h"

namespace vmf {

struct EndToEndOptions {
  std::string runtime_dir;           // private to the bench: sockets and VMs go here
  std::string template_root;         // the bench's template (for "template" and "cache")
  std::string config_path;           // passed on with --config when not empty
  VMConfig config;                   // vCPUs, memory, kernel and initrd are passed on
  std::vector<std::string> sources;  // of "cold", "template", "restore", "cache", in this order
  int iterations = 5;
};

struct EndToEndResult {
  std::string source;
  Status status;  // why this source could not be measured
  std::vector<Duration> samples;
  Duration p50{0};
  Duration p95{0};
};

// Clients of one daemon (the bench's own: a pool of 2 and 2 restore targets
// over its template) at once: each of `concurrency` workers takes
// `per_worker` VMs one after the other (GetVM, attach, run `true`, stop). A
// burst larger than the pool is served by clones, from the restore targets
// while there are any: slower, never an error.
struct DaemonLoadResult {
  int concurrency = 0;
  Status status;  // the first failure, if any
  int vms = 0;
  int from_pool = 0;     // GetVM answers with source "cache"
  int from_targets = 0;  // clones that took a waiting restore target (the daemon's count)
  double wall_s = 0;
  double vms_per_s = 0;
  Duration getvm_p50{0};
  Duration getvm_p99{0};
};

std::vector<EndToEndResult> MeasureEndToEnd(const EndToEndOptions& options, CancelToken* cancel);
std::vector<DaemonLoadResult> MeasureDaemonLoad(const EndToEndOptions& options,
                                                const std::vector<int>& concurrency, int per_worker,
                                                CancelToken* cancel);

}  // namespace vmf
