// Hypervisor: the VM process and its control channel. QemuHypervisor is the
// real one; unit tests of VM logic may substitute a fake.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "vm/config.h"

namespace vmf {

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // Launches the VM process and connects its control channel. The guest
  // boots (or, for a clone, waits for its state) in the background.
  virtual Status Start(const Deadline& deadline) = 0;
  // For a clone: loads the template's device state and leaves the VM paused.
  virtual Status RestoreState(const Deadline& deadline) = 0;
  virtual Status Pause() = 0;
  virtual Status Resume() = 0;
  // Saves the device state of a paused VM (RAM stays in its backing file).
  virtual Status Save(const Deadline& deadline) = 0;
  // Stops the VM process (orderly if possible, then SIGKILL). Idempotent.
  virtual Status Stop() = 0;
  virtual Status AddCPUs(uint32_t count) = 0;
  virtual Status AddMemory(uint32_t mib) = 0;

  virtual pid_t pid() const = 0;
  virtual bool Running() = 0;
  // Sockets the proxy connects to.
  virtual std::string agent_socket() const = 0;
  virtual std::string console_socket() const = 0;
  virtual std::string qmp_socket() const = 0;
  // The tail of the VM process's own error output, for error messages.
  virtual std::string ErrorOutput() const = 0;
  // Gives up the process without stopping it (it is handed to another
  // process) and closes the control channel, which accepts one client.
  virtual pid_t Release() = 0;
};

// QEMU driven over QMP. All files live in `dir` (the VM's runtime dir).
std::unique_ptr<Hypervisor> NewQemuHypervisor(const std::string& id, const HypervisorConfig& config,
                                              const std::string& dir);

// Takes over a running QEMU (started by another process) and connects to
// its control channel.
Result<std::unique_ptr<Hypervisor>> AttachQemuHypervisor(const std::string& id, const HypervisorConfig& config,
                                                         const std::string& dir, pid_t pid,
                                                         const Deadline& deadline);

// The QEMU command line for a config (exposed for tests and `-v` output).
std::vector<std::string> QemuArgv(const std::string& id, const HypervisorConfig& config,
                                  const std::string& dir, bool use_kvm);

}  // namespace vmf
