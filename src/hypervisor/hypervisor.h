// Hypervisor: one VM process and its control channel, as the VM type sees
// it. HypervisorBackend makes them (a fresh process, or one another process
// started and handed over). The real backend is QEMU (hypervisor/qemu/);
// tests/mocks/fake_hypervisor.h is the fake the unit tests use.
//
//   HypervisorBackend& qemu = *BackendNamed("qemu");   // hypervisor/backends.h
//   VMF_RETURN_IF_ERROR(qemu.Validate(config));
//   VMF_ASSIGN_OR_RETURN(auto h, qemu.Create(id, config, dir));
//   VMF_RETURN_IF_ERROR(h->Start(deadline));
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "hypervisor/config.h"

namespace vmf {

// Where the guest's channels come out on the host: unix sockets that the
// agent proxy connects to.
struct GuestEndpoints {
  std::string agent;    // the agent's virtio-serial port
  std::string console;  // the guest's serial console; empty: none
};

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
  // Stops the VM process (orderly if possible, then SIGKILL) and reaps it.
  // Idempotent.
  virtual void Stop() = 0;
  virtual Status AddCPUs(uint32_t count) = 0;
  virtual Status AddMemory(uint32_t mib) = 0;
  // Hot-adds the image file at path as a virtio disk whose serial (what the
  // guest sees in /sys/block/*/serial) is `serial`, into a free disk slot;
  // RESOURCE_EXHAUSTED when none is left. RemoveDisk unplugs it and waits
  // (bounded) until the VM process has let go of the file.
  virtual Status AddDisk(const std::string& serial, const std::string& path, bool read_only) = 0;
  virtual Status RemoveDisk(const std::string& serial) = 0;
  // The VM generation id the guest is shown (a GUID, fresh for every VM
  // process: a clone's differs from its template's and its siblings').
  virtual Result<std::string> GenerationId() = 0;

  virtual pid_t pid() const = 0;
  virtual bool Running() = 0;
  virtual GuestEndpoints endpoints() const = 0;
  // The control channel's address, for a VM handed to another process
  // (informational: Attach finds it from the VM dir).
  virtual std::string control_endpoint() const = 0;
  // The tail of the VM process's own error output, if it wrote any.
  virtual std::optional<std::string> ErrorOutput() const = 0;
  // Gives up the process without stopping it (it is handed to another
  // process) and closes the control channel, which accepts one client.
  virtual pid_t Release() = 0;
};

class HypervisorBackend {
 public:
  virtual ~HypervisorBackend() = default;
  virtual std::string_view name() const = 0;
  // Checks the backend's own options (binary, machine, accelerator); the
  // error names the config field.
  virtual Status Validate(const HypervisorConfig& config) const = 0;
  // A hypervisor for a new VM whose files live in `dir`; not started yet.
  virtual Result<std::unique_ptr<Hypervisor>> Create(const std::string& id, const HypervisorConfig& config,
                                                     const std::string& dir) = 0;
  // Takes over a running VM process that another process started and
  // released. On failure the process is left alone (not ours to stop).
  virtual Result<std::unique_ptr<Hypervisor>> Attach(const std::string& id, const HypervisorConfig& config,
                                                     const std::string& dir, pid_t pid,
                                                     const Deadline& deadline) = 0;
};

}  // namespace vmf
