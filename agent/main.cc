// vmfactory-agent: PID 1 of the guest initramfs. Sets the guest up, finds the
// virtio-serial port named agent.0 (or vmf.port=NAME on the kernel command
// line) and serves ttrpc on it forever. As PID 1 it never exits: the kernel
// would panic.
#include <unistd.h>

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
      const vmf::Status s = ServeOnPort(PortNameFromCmdline(ReadCmdline()), pid1);
      Log("cannot open the agent port: %s", s.ToString().c_str());
    } catch (const std::exception& e) {
      Log("fatal: %s", e.what());
    } catch (...) {
      Log("fatal: unknown exception");
    }
    if (!pid1) return 1;
    ::sleep(1);  // PID 1 must never exit: retry
  }
}
