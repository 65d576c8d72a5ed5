// Fuzz target: the configuration file loader (src/config/config_file.h).
//
// Input: the text of a config.toml. ParseConfig must either accept it with
// every value in its documented range, or fail with an error that names the
// file. Every fourth input also goes through LoadConfigFile, from a memfd
// (the same bytes read back as a file), which must agree with ParseConfig.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "config/config_file.h"
#include "fuzz_util.h"

namespace {

using namespace vmf;

constexpr char kOrigin[] = "fuzz.toml";

void CheckConfig(const Config& c) {
  const HypervisorConfig& h = c.vm.hypervisor;
  FUZZ_CHECK(h.vcpus >= 1 && h.vcpus <= 240);
  FUZZ_CHECK(h.max_vcpus >= h.vcpus && h.max_vcpus <= 240);
  FUZZ_CHECK(h.memory_mib >= 64 && h.memory_mib <= (1u << 20));
  FUZZ_CHECK(h.max_memory_mib >= h.memory_mib && h.max_memory_mib <= (1u << 20));
  FUZZ_CHECK(h.qemu.memory_slots <= 256);
  FUZZ_CHECK(h.qemu.machine == "q35" || h.qemu.machine == "pc");
  FUZZ_CHECK(h.kernel_params.find_first_of(std::string("\r\n\0", 3)) == std::string::npos);
  FUZZ_CHECK(c.vm.agent.boot_timeout.count() > 0 && c.vm.agent.call_timeout.count() > 0);
  FUZZ_CHECK(c.factory.vm_cache_number >= 0 && c.factory.vm_cache_number <= 64);
  FUZZ_CHECK(c.factory.vm_cache_parallelism >= 1 && c.factory.vm_cache_parallelism <= 8);
  FUZZ_CHECK(!c.factory.template_path.empty() && c.factory.template_path[0] == '/');
  FUZZ_CHECK(!c.factory.vm_cache_endpoint.empty() && c.factory.vm_cache_endpoint[0] == '/');
  FUZZ_CHECK(c.factory.vm_cache_endpoint.size() <= 107 ||
             c.factory.vm_cache_endpoint == c.vm.runtime_dir + "/daemon.sock");
  FUZZ_CHECK(c.vm.runtime_dir.empty() || c.vm.runtime_dir[0] == '/');
}

// A memfd holding the input, so that LoadConfigFile reads it as a file.
int InputFd() {
  static int fd = ::memfd_create("fuzz-config", MFD_CLOEXEC);
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text = vmf::fuzz::AsView(data, size);
  Result<Config> parsed = ParseConfig(text, kOrigin);
  if (parsed.ok()) {
    CheckConfig(*parsed);
  } else {
    // Every error names the file (and, for errors in it, the line).
    FUZZ_CHECK(parsed.status().message().rfind(kOrigin, 0) == 0);
    FUZZ_CHECK(parsed.status().code() != Code::kOk);
  }

  if (size % 4 == 0 && size <= kMaxConfigFileBytes && InputFd() >= 0) {
    int fd = InputFd();
    FUZZ_CHECK(::ftruncate(fd, 0) == 0);
    FUZZ_CHECK(::pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    Result<Config> loaded = LoadConfigFile(path);
    FUZZ_CHECK(loaded.ok() == parsed.ok());
    if (!loaded.ok()) {
      FUZZ_CHECK(loaded.status().code() == parsed.status().code());
      FUZZ_CHECK(loaded.status().message().rfind(path, 0) == 0);
    }
  }
  return 0;
}
