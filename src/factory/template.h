// Template: a booted VM's saved device state plus its RAM in a file, from
// which clones start copy-on-write in a fraction of a cold boot.
//
// Layout of a template root (private, 0700; a tmpfs sized for the RAM when
// running as root):
//   ROOT/gen-ID/memory         guest RAM (written by QEMU, mapped shared)
//   ROOT/gen-ID/state          device state (the backend's own format; QEMU:
//                              a migration stream)
//   ROOT/gen-ID/boot-stub      the kernel's boot header without the kernel,
//                              what a clone's QEMU loads instead of the kernel
//                              (a clone never boots; QEMU keeps a loaded
//                              kernel in its own memory: 13.5 MiB here)
//   ROOT/gen-ID/template.json  what it was made from, format version, sizes
//   ROOT/current -> gen-ID     switched atomically once gen-ID is complete
// A generation becomes visible only when `current` points at it, so a
// half-written template never exists; a failed init leaves the previous one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"
#include "vm/config.h"
#include "vm/vm.h"

namespace vmf {

// 2: records SHA-256 digests of the RAM and state files.
// 3: the saved state has a vmgenid device; the files' stamps are recorded.
// 4: PCIe root ports for hot-added disks (hypervisor.qemu.disk_slots).
inline constexpr int kTemplateFormatVersion = 4;

struct TemplateInfo {
  std::string root;             // the template root
  std::string generation;       // ROOT/gen-ID
  HypervisorConfig hypervisor;  // what the template VM was booted with
  int format_version = 0;
  int64_t created_unix = 0;
  uint64_t memory_bytes = 0;
  uint64_t state_bytes = 0;
  std::string memory_sha256;  // recorded by init, checked on every use
  std::string state_sha256;
  // The files' versions (FileStamp) when init hashed them.
  std::string memory_stamp;
  std::string state_stamp;
  uint64_t boot_stub_bytes = 0;  // 0: none (the kernel is not a bzImage); clones load the kernel
  std::string memory_path() const { return generation + "/memory"; }
  std::string boot_stub_path() const { return generation + "/boot-stub"; }
  std::string state_path() const { return generation + "/state"; }
};

using Progress = std::function<void(const std::string& step)>;

// Default template root: RUNTIME/template.
std::string DefaultTemplateRoot(const std::string& runtime_dir);

// Boots a VM from `config`, waits for its agent, disconnects, pauses, saves
// its state and stops it, then publishes it as the current template.
struct TemplateOptions {
  bool force = false;       // replace a valid template
  bool mount_tmpfs = true;  // as root, keep the template in a tmpfs of its own
  Progress progress;        // told each step, if set
  VmDeps deps;              // what the template VM is made with (tests: fakes)
};

// Refuses to replace a valid template unless `force`.
Result<TemplateInfo> CreateTemplate(const VMConfig& config, const std::string& root,
                                    const TemplateOptions& options);

// Reads and checks the current template. NOT_FOUND means there is none
// (no root, or no `current` link); every problem with one that exists
// (a file missing, truncated, of the wrong size, unreadable, not private:
// DATA_LOSS or PERMISSION_DENIED; another format version:
// FAILED_PRECONDITION) is an error naming the file.
Result<TemplateInfo> LoadTemplate(const std::string& root);

// The boot stub of an x86 bzImage: its setup sectors (the boot header QEMU
// reads) and a page of zeros for the protected-mode kernel. NOT_FOUND when
// the file is not a bzImage.
Result<std::string> BootStubOf(const std::string& kernel);

// Removes the template root completely, unmounting its tmpfs.
Status DestroyTemplate(const std::string& root);

// OK if a VM made from `base` can serve `request`; otherwise
// FAILED_PRECONDITION saying why: another backend, kernel, initrd, machine
// or kernel command line, or a size below base's or above its hotplug
// ceiling. `whose` names base in the message.
Status HypervisorMismatch(const HypervisorConfig& base, const HypervisorConfig& request,
                          const std::string& whose);

// HypervisorMismatch against the template's config.
Status TemplateMismatch(const TemplateInfo& t, const VMConfig& request);

// The config of a clone of `t`, sized as the template (hotplug adds the
// rest), loading the boot stub instead of the kernel when there is one.
VMConfig CloneConfig(const TemplateInfo& t, const VMConfig& request);

}  // namespace vmf
