// vmfactory's configuration file (TOML, in the spirit of Kata's configuration.toml).
//
//   [hypervisor.qemu]
//   path = "/usr/bin/qemu-system-x86_64"   # absolute, or a name looked up in PATH
//   kernel = "/path/vmlinuz"               # absolute, must exist
//   initrd = "/path/initramfs.cpio"        # absolute, must exist
//   machine_type = "q35"                   # q35 | pc
//   kernel_params = ""
//   default_vcpus = 1                      # 1..240
//   default_maxvcpus = 4                   # default_vcpus..240
//   default_memory = 256                   # MiB, 64..1048576
//   memory_slots = 4                       # 0..256
//   disk_slots = 6                         # 0..32, disks hot-added (q35 only)
//   default_maxmemory = 2048               # MiB, default_memory..1048576
//   accel = "auto"                         # auto | kvm | tcg
//
//   [agent]
//   boot_timeout = 90                      # seconds, 1..3600
//   call_timeout = 30                      # seconds, 1..3600
//   health_timeout = 30                    # seconds, 0..3600: the shim ends a VM whose
//                                          #   agent is silent this long (0: never)
//
//   [factory]
//   enable_template = true
//   template_path = "/run/vmfactory/template"       # "" or unset: RUNTIME/template
//   vm_cache_number = 0                              # 0..64, VMs kept ready by `vmfactory serve`
//   vm_cache_endpoint = "/run/vmfactory/daemon.sock" # "" or unset: RUNTIME/daemon.sock
//   vm_cache_parallelism = 1                         # 1..8 concurrent refills
//   restore_targets = 0                              # 0..64, clones `vmfactory serve` keeps started,
//                                                    # waiting for the template's state
//
//   [security]                             # see README, Security
//   confine = true                         # uid per VM + jail (as root), seccomp (always)
//   uid_first = 1879048192                 # VMs' uids/gids: uid_first .. uid_first+uid_count-1,
//   uid_count = 65536                      #   none of them a user or group of this machine
//   readonly_open_lib = "/usr/local/lib/vmfactory/libvmf-readonly-open.so"
//
//   [limits]                               # each VM (QEMU + proxy) in a cgroup of its own
//   enabled = true
//   required = false                       # true: no VM without limits (no usable cgroup: error)
//   memory_overhead_mib = 256              # 0..1048576, QEMU's own memory above the guest's
//   pids_max = 256                         # 16..4194304, tasks (processes + threads)
//
//   [metrics]
//   address = "127.0.0.1:9464"             # host:port (Prometheus text over HTTP); "" disables
//
//   [runtime]
//   dir = "/run/vmfactory"                 # "" or unset: DefaultRuntimeDir()
//
// Every key is optional; what is not set keeps its built-in default. Unknown
// tables and keys are errors (a typo must not silently fall back to a
// default). Every error names the file, the line and the full key:
//
//   config.toml:7: factory.vm_cache_number: must be between 0 and 64, got -1
//
// When default_maxvcpus / default_maxmemory are not set, they are raised to
// default_vcpus / default_memory if those exceed the built-in ceiling; when
// they are set explicitly, a value below the base size is an error.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "vm/config.h"

namespace vmf {

struct FactoryConfig {
  bool enable_template = true;
  std::string template_path;      // "" = DefaultTemplateRoot(runtime dir)
  int vm_cache_number = 0;        // pooled VMs kept ready by `vmfactory serve`
  std::string vm_cache_endpoint;  // "" = RUNTIME/daemon.sock
  int vm_cache_parallelism = 1;   // concurrent refills
  int restore_targets = 0;        // template clones `vmfactory serve` keeps waiting for their state
};

struct MetricsConfig {
  std::string address = "127.0.0.1:9464";  // host:port; "" disables the endpoint
};

struct Config {
  VMConfig vm;  // starts from DefaultVMConfig()
  FactoryConfig factory;
  MetricsConfig metrics;
};

// Largest configuration file LoadConfigFile reads.
inline constexpr size_t kMaxConfigFileBytes = 1 << 20;

// Built-in defaults (no file needed): DefaultVMConfig() plus the defaults
// above, with vm.runtime_dir = DefaultRuntimeDir() and the runtime-dependent
// paths (template_path, vm_cache_endpoint) filled from it. Not validated.
Config DefaultConfig();

// Parses TOML text on top of DefaultConfig(), checks every key, then runs
// VMConfig::Validate(). `origin` names the file in errors. Errors in the file
// are INVALID_ARGUMENT; Validate()'s errors keep their code (e.g. NOT_FOUND
// for a missing qemu), prefixed with `origin`.
Result<Config> ParseConfig(std::string_view toml_text, const std::string& origin);

// Reads (at most kMaxConfigFileBytes) and parses a file. A missing file is
// NOT_FOUND naming it.
Result<Config> LoadConfigFile(const std::string& path);

}  // namespace vmf
