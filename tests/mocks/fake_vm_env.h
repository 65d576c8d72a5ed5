// FakeVmEnv: what a unit test needs to make real VM objects with no QEMU: a
// private runtime dir, stand-in kernel and initrd files, a FakeGuest, a
// FakeBackend and an InProcessProxyLauncher, and a census of what is left.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/census.h"
#include "mocks/fake_guest.h"
#include "mocks/fake_hypervisor.h"
#include "mocks/in_process_agent.h"
#include "vm/vm.h"

namespace vmf::testing {

// Agent channel servers save and restore SIGPIPE's disposition around their
// lifetime; with several on threads at once only "ignored" is safe to
// restore.
inline const bool kSigpipeIgnored = (std::signal(SIGPIPE, SIG_IGN), true);

class FakeVmEnv {
 public:
  explicit FakeVmEnv(uint64_t block_size_bytes = 128u << 20)
      : guest_(block_size_bytes), backend_(&guest_), proxies_(&guest_) {
    char tmpl[] = "/tmp/vmf_unit_rt_XXXXXX";
    runtime_ = ::mkdtemp(tmpl);
    std::ofstream(runtime_ + "/vmlinuz") << "fake kernel";
    std::ofstream(runtime_ + "/initrd") << "fake initrd";
  }
  ~FakeVmEnv() {
    StopProcessesMentioning(runtime_, std::chrono::milliseconds(100));
    std::error_code ec;
    std::filesystem::remove_all(runtime_, ec);
  }

  VMConfig Config() const {
    VMConfig c;
    c.runtime_dir = runtime_;
    c.hypervisor.backend = "fake";
    c.hypervisor.kernel = runtime_ + "/vmlinuz";
    c.hypervisor.initrd = runtime_ + "/initrd";
    c.proxy.path = "/bin/true";  // must exist; the in-process launcher never runs it
    c.agent.boot_timeout = std::chrono::seconds(10);
    c.agent.call_timeout = std::chrono::seconds(10);
    return c;
  }
  VmDeps Deps() { return {.backend = &backend_, .proxy = &proxies_}; }

  const std::string& runtime() const { return runtime_; }
  FakeGuest& guest() { return guest_; }
  FakeBackend& backend() { return backend_; }
  InProcessProxyLauncher& proxies() { return proxies_; }

  // What is left of VMs: processes naming the runtime dir, VM dirs.
  int Processes() const { return static_cast<int>(ProcessesMentioning(runtime_).size()); }
  int VmDirs(const std::string& under = "") const {
    std::error_code ec;
    int n = 0;
    for (auto it = std::filesystem::directory_iterator((under.empty() ? runtime_ : under) + "/vm", ec);
         !ec && it != std::filesystem::directory_iterator(); ++it) {
      ++n;
    }
    return n;
  }

 private:
  std::string runtime_;
  FakeGuest guest_;
  FakeBackend backend_;
  InProcessProxyLauncher proxies_;
};

}  // namespace vmf::testing
