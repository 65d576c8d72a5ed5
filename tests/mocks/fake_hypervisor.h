// FakeHypervisor and FakeBackend: a hypervisor for unit tests of VM,
// factory, pool and daemon logic, with no QEMU. The "VM process" is a real
// placeholder process (`tail -f DIR/fake-vmm.log`), so that pids, liveness,
// a SIGKILL and the leak counts behave as with QEMU; hotplug adds entries to
// a FakeGuest's sysfs, which the in-process agent onlines. Every step can be
// made to fail from the test.
//
//   FakeGuest guest;
//   FakeBackend backend(&guest);
//   backend.FailStarts(1, Unavailable("boom"));   // the next Start fails
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/process.h"
#include "common/scoped.h"
#include "hypervisor/hypervisor.h"
#include "mocks/fake_guest.h"

namespace vmf::testing {

// A process that names `dir` on its command line until it is killed; in
// the VM's cgroup, as the real ones are.
inline Result<ChildProcess> SpawnPlaceholder(const std::string& dir, const std::string& name,
                                             const std::vector<int>& cgroup_procs_fds = {}) {
  const std::string file = dir + "/" + name;
  { std::ofstream(file) << ""; }
  SpawnOptions opts;
  opts.cgroup_procs_fds = cgroup_procs_fds;
  return ChildProcess::Spawn({"tail", "-f", file}, opts);
}

class FakeBackend;

class FakeHypervisor : public Hypervisor {
 public:
  FakeHypervisor(FakeBackend* backend, HypervisorConfig config, std::string dir)
      : backend_(backend), config_(std::move(config)), dir_(std::move(dir)) {}
  ~FakeHypervisor() override { Stop(); }

  Status Start(const Deadline& deadline) override;
  Status RestoreState(const Deadline&) override;
  Status Pause() override {
    VMF_RETURN_IF_ERROR(Check("pause"));
    paused_ = true;
    return OkStatus();
  }
  Status Resume() override {
    VMF_RETURN_IF_ERROR(Check("resume"));
    paused_ = false;
    return OkStatus();
  }
  Status Save(const Deadline&) override;
  Result<std::string> GenerationId() override {
    VMF_RETURN_IF_ERROR(Check("generation id"));
    return "fake-" + std::to_string(pid());
  }
  void Stop() override { process_.Stop(std::chrono::milliseconds(200)); }
  Status AddCPUs(uint32_t count) override;
  Status AddMemory(uint32_t mib) override;
  Status AddDisk(const std::string& serial, const std::string& path, bool) override {
    VMF_RETURN_IF_ERROR(Check("add disk"));
    if (!disks_.emplace(serial, path).second) return AlreadyExists("disk " + serial);
    return OkStatus();
  }
  Status RemoveDisk(const std::string& serial) override {
    VMF_RETURN_IF_ERROR(Check("remove disk"));
    return disks_.erase(serial) ? OkStatus() : NotFound("disk " + serial);
  }
  const std::map<std::string, std::string>& disks() const { return disks_; }
  pid_t pid() const override { return process_.pid(); }
  bool Running() override { return process_.Running(); }
  GuestEndpoints endpoints() const override { return {dir_ + "/agent.sock", ""}; }
  std::string control_endpoint() const override { return dir_ + "/fake-control"; }
  std::optional<std::string> ErrorOutput() const override { return std::nullopt; }
  pid_t Release() override { return process_.Release(); }

  void Adopt(pid_t pid) { process_ = ChildProcess::Adopt(pid); }
  bool paused() const { return paused_; }

 private:
  Status Check(const std::string& what) {
    if (!process_.Running()) return Unavailable("fake VM process is not running (" + what + ")");
    return OkStatus();
  }
  FakeBackend* backend_;
  HypervisorConfig config_;
  std::string dir_;
  std::map<std::string, std::string> disks_;  // serial -> image path
  ChildProcess process_;
  bool paused_ = false;
  uint32_t cpus_plugged_ = 0;
};

class FakeBackend : public HypervisorBackend {
 public:
  explicit FakeBackend(FakeGuest* guest) : guest_(guest) {}

  std::string_view name() const override { return "fake"; }
  Status Validate(const HypervisorConfig&) const override { return OkStatus(); }
  Result<std::unique_ptr<Hypervisor>> Create(const std::string&, const HypervisorConfig& config,
                                             const std::string& dir) override {
    if (Status st = Take(&fail_creates_); !st.ok()) return st;
    ++created_;
    return std::unique_ptr<Hypervisor>(std::make_unique<FakeHypervisor>(this, config, dir));
  }
  Result<std::unique_ptr<Hypervisor>> Attach(const std::string&, const HypervisorConfig& config,
                                             const std::string& dir, pid_t pid, const Deadline&) override {
    auto h = std::make_unique<FakeHypervisor>(this, config, dir);
    h->Adopt(pid);
    return std::unique_ptr<Hypervisor>(std::move(h));
  }

  // The next n calls of that step fail with `error`.
  void FailCreates(int n, Status error) { Set(&fail_creates_, n, std::move(error)); }
  void FailStarts(int n, Status error) { Set(&fail_starts_, n, std::move(error)); }
  void FailRestores(int n, Status error) { Set(&fail_restores_, n, std::move(error)); }

  FakeGuest& guest() { return *guest_; }
  int created() const { return created_; }
  int started() const { return started_; }
  uint32_t memory_added_mib() const { return memory_added_mib_; }

 private:
  friend class FakeHypervisor;
  struct Failure {
    int left = 0;
    Status error;
  };
  void Set(Failure* f, int n, Status error) {
    std::lock_guard<std::mutex> l(mu_);
    f->left = n;
    f->error = std::move(error);
  }
  Status Take(Failure* f) {
    std::lock_guard<std::mutex> l(mu_);
    if (f->left <= 0) return OkStatus();
    --f->left;
    return f->error;
  }

  FakeGuest* guest_;
  std::mutex mu_;
  Failure fail_creates_, fail_starts_, fail_restores_;
  std::atomic<int> created_{0};
  std::atomic<int> started_{0};
  std::atomic<uint32_t> memory_added_mib_{0};
};

inline Status FakeHypervisor::Start(const Deadline&) {
  VMF_RETURN_IF_ERROR(backend_->Take(&backend_->fail_starts_));
  if (config_.boot == BootMode::kTemplateSource) {
    // The template's RAM file, as QEMU's memory-backend-file makes it.
    UniqueFd f(::open(config_.memory_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!f || ::ftruncate(f.get(), static_cast<off_t>(uint64_t{config_.memory_mib} << 20)) != 0) {
      return ErrnoStatus(errno, "fake: memory file " + config_.memory_path);
    }
  }
  VMF_ASSIGN_OR_RETURN(process_, SpawnPlaceholder(dir_, "fake-vmm.log", config_.cgroup_procs_fds));
  paused_ = config_.boot == BootMode::kClone;
  ++backend_->started_;
  return OkStatus();
}

inline Status FakeHypervisor::RestoreState(const Deadline&) {
  VMF_RETURN_IF_ERROR(Check("restore"));
  VMF_RETURN_IF_ERROR(backend_->Take(&backend_->fail_restores_));
  if (::access(config_.device_state_path.c_str(), R_OK) != 0) {
    return ErrnoStatus(errno, "fake: device state " + config_.device_state_path);
  }
  return OkStatus();
}

inline Status FakeHypervisor::Save(const Deadline&) {
  VMF_RETURN_IF_ERROR(Check("save"));
  VMF_ASSIGN_OR_RETURN(ScopedTempFile out, ScopedTempFile::Create(config_.device_state_path + ".tmp"));
  const std::string state = "fake device state\n";
  if (::write(out.fd(), state.data(), state.size()) != static_cast<ssize_t>(state.size())) {
    return ErrnoStatus(errno, "fake: write state");
  }
  return out.Commit(config_.device_state_path);
}

inline Status FakeHypervisor::AddCPUs(uint32_t count) {
  VMF_RETURN_IF_ERROR(Check("add cpus"));
  if (config_.vcpus + cpus_plugged_ + count > config_.max_vcpus) {
    return ResourceExhausted("fake: no free vCPU slots");
  }
  for (uint32_t i = 0; i < count; ++i) backend_->guest().PlugCpu();
  cpus_plugged_ += count;
  return OkStatus();
}

inline Status FakeHypervisor::AddMemory(uint32_t mib) {
  VMF_RETURN_IF_ERROR(Check("add memory"));
  backend_->memory_added_mib_ += mib;
  for (uint32_t done = 0; done < mib; done += 128) backend_->guest().PlugMemoryBlock();
  return OkStatus();
}

}  // namespace vmf::testing
