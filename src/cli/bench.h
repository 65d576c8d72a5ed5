// `vmfactory bench`: measures how fast and how small VMs are from each
// source, against a cold boot in the same run.
//
//   cold     - VM::Create, a full boot every time;
//   template - CloneFromTemplate of a template the bench makes for itself in
//              a private temp dir (never the user's), removed at the end.
//
// Latency: N times, get a VM and exec `echo ready` until its first output.
// Memory: K VMs at once, the PSS of each one's QEMU plus its proxy.
// The targets (template p50 >= 10x faster, clone PSS <= 30% of cold)
// are reported, never enforced.
#pragma once

#include <string>
#include <vector>

#include "common/cancel.h"
#include "vm/config.h"

namespace vmf {

struct BenchOptions {
  VMConfig config;
  std::vector<std::string> modes = {"cold", "template"};
  int iterations = 5;       // latency samples per mode
  int concurrency_mem = 4;  // VMs alive at once for the memory measurement
};

// Returns the process exit status: 0 when the bench ran (targets met or not),
// 1 when a VM could not be had or measured, 2 on bad options, 128+N (130 for
// Ctrl-C) when interrupted. Every VM is stopped and the bench's template
// removed on every path.
int RunBench(const BenchOptions& opts, CancelToken* cancel, const int* signal_seen);

}  // namespace vmf
