// The command line containerd gives a shim v2 binary, in Go's flag syntax
// (one or two dashes, "-name value" or "-name=value"), then the action:
//
//   containerd-shim-vmfactory-v2 -namespace NS -address SOCK -publish-binary BIN -id ID [-debug] start
//   containerd-shim-vmfactory-v2 -namespace NS -address SOCK -publish-binary BIN -id ID -bundle DIR delete
//   containerd-shim-vmfactory-v2 -namespace NS -id ID ...                 (the serving shim; fd 3 listens)
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace vmf::shim {

struct ShimFlags {
  std::string ns;              // -namespace
  std::string address;         // -address: containerd's gRPC socket
  std::string publish_binary;  // -publish-binary
  std::string id;              // -id
  std::string bundle;          // -bundle (else the working directory)
  std::string socket;    // -socket: the serving shim's socket (it listens on fd 3), removed when it ends
  bool debug = false;    // -debug
  bool version = false;  // -v
  std::string action;    // "start", "delete" or "" (serve)
};

// INVALID_ARGUMENT naming an unknown flag, a flag without its value or a
// second action.
Result<ShimFlags> ParseShimFlags(const std::vector<std::string>& args);

// The argv that re-runs this shim as the serving process for the same
// namespace, id and containerd.
std::vector<std::string> ServeArgv(const std::string& self, const ShimFlags& f);

}  // namespace vmf::shim
