// `vmfactory bench`: measures how fast and how small VMs are from each
// source, against a baseline measured in the same run.
//
//   cold        - VM::Create, a full boot every time;
//   template    - CloneFromTemplate of a template the bench makes for itself;
//   cache       - an in-process VMCache over a template factory: a pool hit;
//   qemu-cold   - qemu-system-x86_64 run by the bench itself, no factory and
//                 no proxy: the bench talks ttrpc to the agent socket;
//   qemu-loadvm - QEMU's own snapshot: savevm once into a qcow2 disk, then
//                 each VM is a new QEMU with -loadvm.
//
// Per mode: latency (request until `echo ready` printed, split in steps),
// memory per VM (PSS, K VMs alive at once), throughput (VMs ready per
// minute with C requests at once). Ratios are against `cold` (or the first
// mode if cold is not asked for). Targets are reported, never enforced.
// Everything the bench makes lives in one private temp dir, removed at the
// end, also on error and Ctrl-C.
#pragma once

#include <string>
#include <vector>

#include "common/cancel.h"
#include "vm/config.h"

namespace vmf {

struct BenchOptions {
  VMConfig config;
  std::vector<std::string> modes = {"cold", "template", "cache"};
  int iterations = 5;                     // latency samples per mode
  int concurrency = 2;                    // requests at once for the throughput figure
  int concurrency_mem = 4;                // VMs alive at once for the memory measurement (K)
  std::string json_path;                  // write every figure here if set
  std::string plot_path;                  // PNG (gnuplot) if set
  std::vector<std::string> command_line;  // recorded in the JSON
  std::string config_path;                // --config, passed on to the end-to-end `vmfactory run`s
};

// Returns the process exit status: 0 when every mode was measured (targets
// met or not; a missing gnuplot only skips the plot), 1 when a mode could not
// be measured or a result could not be written, 2 on bad options, 128+N (130
// for Ctrl-C) when interrupted. Every VM and QEMU is stopped and the private
// temp dir removed on every path.
int RunBench(const BenchOptions& opts, CancelToken* cancel, const int* signal_seen);

}  // namespace vmf
