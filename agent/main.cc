// vmfactory-agent: PID 1 of the guest initramfs. Sets the guest up, finds the
// virtio-serial port named agent.0 (or vmf.port=NAME on the kernel command
// line) and serves ttrpc on it forever. As PID 1 it never exits: the kernel
// would panic.
#include <unistd.h>

#include <chrono>
#include <exception>

#include "init.h"
#include "log.h"
#include "server.h"

int main() {
  using namespace vmf::agent;
  const bool pid1 = ::getpid() == 1;
  try {
    InitGuest(pid1);
  } catch (const std::exception& e) {
    Log("init failed: %s", e.what());
  }
  while (true) {
    try {
      const std::string name = PortNameFromCmdline(ReadCmdline());
      auto port = OpenAgentPort("/sys/class/virtio-ports", "/dev", name, std::chrono::seconds(10));
      if (!port.ok()) {
        Log("cannot open the agent port: %s", port.status().ToString().c_str());
        if (!pid1) return 1;
        ::sleep(1);
        continue;
      }
      ChannelServer::Options opts;
      opts.service.reap_all_children = pid1;
      ChannelServer server(std::move(*port), opts);
      Log("serving (%.3f s since boot)", SecondsSinceBoot());
      server.Run(nullptr);
    } catch (const std::exception& e) {
      Log("fatal: %s", e.what());
    } catch (...) {
      Log("fatal: unknown exception");
    }
    if (!pid1) return 1;
    ::sleep(1);  // PID 1 must never exit: retry
  }
}
