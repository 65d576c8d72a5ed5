// TempSysfs: a sysfs tree in a temp dir for the agent's guest operations
// (AgentService::Options::sysfs_root): devices/system/{cpu,memory} with the
// cpuN/online and memoryN/state files the agent reads and writes. Removed
// with everything in it when the owner goes.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace vmf::testing {

class TempSysfs {
 public:
  TempSysfs() {
    char tmpl[] = "/tmp/vmf_sysfs_XXXXXX";
    root_ = ::mkdtemp(tmpl);
    for (const char* d : {"devices", "devices/system", "devices/system/cpu", "devices/system/memory"})
      Mkdir(d);
  }
  ~TempSysfs() {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }
  TempSysfs(const TempSysfs&) = delete;
  TempSysfs& operator=(const TempSysfs&) = delete;

  void Mkdir(const std::string& rel) { ::mkdir((root_ + "/" + rel).c_str(), 0755); }
  void Write(const std::string& rel, const std::string& data) { std::ofstream(root_ + "/" + rel) << data; }
  std::string Read(const std::string& rel) {
    std::ifstream f(root_ + "/" + rel);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  // cpuN with an online file holding state ("0" or "1"); none for cpu0-like CPUs.
  void Cpu(int n, const char* state) {
    std::string dir = "devices/system/cpu/cpu" + std::to_string(n);
    Mkdir(dir);
    if (state != nullptr) Write(dir + "/online", std::string(state) + "\n");
  }
  void Mem(int n, const char* state) {
    std::string dir = "devices/system/memory/memory" + std::to_string(n);
    Mkdir(dir);
    Write(dir + "/state", std::string(state) + "\n");
  }
  std::string CpuState(int n) {
    return Read("devices/system/cpu/cpu" + std::to_string(n) + "/online").substr(0, 1);
  }
  std::string MemState(int n) { return Read("devices/system/memory/memory" + std::to_string(n) + "/state"); }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

}  // namespace vmf::testing
