// ExecAndCollect: runs one command in a VM through its agent, feeds it
// stdin, and collects its exit code and output (each stream bounded).
//
//   VMF_ASSIGN_OR_RETURN(auto r, ExecAndCollect(vm.agent(), {"uname", "-r"}));
//   if (r.exit_code != 0) ...
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "vm/agent_client.h"

namespace vmf {

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

struct CollectOptions {
  std::string stdin_data;
  Duration timeout = std::chrono::seconds(120);
  size_t max_output = 64u << 20;  // per stream; more is RESOURCE_EXHAUSTED
};

Result<CommandResult> ExecAndCollect(AgentClient& agent, const std::vector<std::string>& args,
                                     const CollectOptions& options = {});

}  // namespace vmf
