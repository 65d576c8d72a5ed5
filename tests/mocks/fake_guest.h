// FakeGuest: the guest side that the fakes share. A sysfs tree in a temp
// dir (cpuN/online, memoryN/state, block_size_bytes) that FakeHypervisor's
// hotplug adds entries to and the in-process agent onlines, as a kernel
// would.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

namespace vmf::testing {

class FakeGuest {
 public:
  explicit FakeGuest(uint64_t block_size_bytes = 128u << 20) {
    char tmpl[] = "/tmp/vmf_fake_guest_XXXXXX";
    root_ = ::mkdtemp(tmpl);
    std::filesystem::create_directories(root_ + "/devices/system/cpu/cpu0");
    std::filesystem::create_directories(root_ + "/devices/system/memory");
    char hex[32];
    std::snprintf(hex, sizeof(hex), "%llx\n", static_cast<unsigned long long>(block_size_bytes));
    Write("devices/system/memory/block_size_bytes", hex);
  }
  ~FakeGuest() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  FakeGuest(const FakeGuest&) = delete;
  FakeGuest& operator=(const FakeGuest&) = delete;

  const std::string& sysfs_root() const { return root_; }

  // What a hot-added vCPU or memory block looks like before it is onlined.
  void PlugCpu() {
    std::lock_guard<std::mutex> l(mu_);
    std::string dir = root_ + "/devices/system/cpu/cpu" + std::to_string(++cpus_);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/online") << "0";
  }
  void PlugMemoryBlock() {
    std::lock_guard<std::mutex> l(mu_);
    std::string dir = root_ + "/devices/system/memory/memory" + std::to_string(blocks_++);
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/state") << "offline";
  }
  int OnlineCpus() const { return Count("devices/system/cpu", "cpu", "online", "1"); }
  int OnlineMemoryBlocks() const { return Count("devices/system/memory", "memory", "state", "online"); }

 private:
  void Write(const std::string& rel, const std::string& data) { std::ofstream(root_ + "/" + rel) << data; }
  int Count(const std::string& rel, const std::string& prefix, const std::string& file,
            const std::string& value) const {
    int n = 0;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(root_ + "/" + rel, ec)) {
      if (e.path().filename().string().rfind(prefix, 0) != 0 || !e.is_directory()) continue;
      std::ifstream f(e.path() / file);
      std::string s;
      f >> s;
      // The agent writes sysfs attributes in place (no truncation): a state
      // of "offline" overwritten with "online" reads "onlinee" here.
      if (s.rfind(value, 0) == 0) ++n;
    }
    return n;
  }
  std::string root_;
  std::mutex mu_;
  int cpus_ = 0;
  int blocks_ = 0;
};

}  // namespace vmf::testing
