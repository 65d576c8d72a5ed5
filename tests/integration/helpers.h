// Shared helpers for the integration tests: real QEMU, the real guest image.
#pragma once

#include <string>
#include <vector>

#include "factory/template.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf::testing {

// A config on the built guest image with a runtime dir private to this test
// process, so that leftovers can be counted.
VMConfig TestConfig();
const std::string& TestRuntimeDir();

// The template shared by every test process: made once per build of the
// guest image (under a file lock, so parallel tests wait for one another)
// and reused across runs while it still fits TestConfig().
const TemplateInfo& SharedTemplate();

struct ExecResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
// Runs args in the VM through its agent, feeding stdin_data, collecting output.
Result<ExecResult> Exec(VM& vm, const std::vector<std::string>& args, const std::string& stdin_data = "");

// Processes whose command line mentions `needle` (QEMU and proxies carry
// their runtime dir in their arguments).
int CountProcessesMentioning(const std::string& needle);
// Entries in TestRuntimeDir()/vm, or in runtime_dir/vm.
int CountVmDirs();
int CountVmDirsIn(const std::string& runtime_dir);

// A vmfactory config for the containerd shim (shim and pod tests): this
// build's guest image, the shared template, no daemon, and runtime_dir as
// its runtime dir (to count what is left there), and `agent` as the body of
// its [agent] table. Returns its path (runtime_dir/name).
std::string WriteShimConfig(const std::string& runtime_dir, const std::string& name = "config.toml",
                            const std::string& agent = "");
int CountOpenFds();

}  // namespace vmf::testing
