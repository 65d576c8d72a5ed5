#include "hypervisor/qemu/qemu_hypervisor.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fd.h"
#include "common/io.h"
#include "common/jail.h"
#include "common/process.h"
#include "common/scoped.h"
#include "hypervisor/qemu/qmp_client.h"

namespace vmf {
namespace {

// The id of the PCIe root port that disk slot n plugs into.
std::string DiskPort(int n) { return "vmf-rp" + std::to_string(n); }

// Disks are hot-added into PCIe root ports, which only q35 has.
uint32_t DiskSlots(const HypervisorConfig& c) {
  return c.qemu.machine.rfind("q35", 0) == 0 ? c.qemu.disk_slots : 0;
}

using nlohmann::json;

// Guest command line: a serial console, no reboot on panic (QEMU exits with
// -no-reboot), hotplugged memory onlined by the kernel, and the legacy
// keyboard probes that cost seconds under TCG switched off.
constexpr const char* kBaseKernelParams =
    "console=ttyS0 panic=-1 quiet loglevel=3 memhp_default_state=online "
    "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable no_timer_check "
    "rcupdate.rcu_expedited=1";

class QemuHypervisor : public Hypervisor {
 public:
  QemuHypervisor(std::string id, HypervisorConfig config, std::string dir)
      : id_(std::move(id)), config_(std::move(config)), dir_(std::move(dir)) {}
  ~QemuHypervisor() override { Stop(); }

  Status Start(const Deadline& deadline) override {
    const bool use_kvm = QemuUsesKvm(config_);
    auto argv = QemuArgv(id_, config_, dir_, {.use_kvm = use_kvm});
    argv[0] = FindProgram(config_.qemu.path);
    UniqueFd log(::open(log_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!log) return ErrnoStatus(errno, "create " + log_path());
    VMF_ASSIGN_OR_RETURN(const Confinement confine, Confine(argv[0], use_kvm));
    SpawnOptions opts;
    opts.stdout_fd = log.get();
    opts.stderr_fd = log.get();
    opts.confine = &confine;
    opts.cgroup_procs_fds = config_.cgroup_procs_fds;
    // A clone's guest RAM is a private file mapping, which huge pages do not
    // back; what QEMU asks huge pages for there is TCG's code buffer, and
    // whole 2 MiB pages of it cost a clone 3.4 MiB of PSS (43.2 -> 39.8 MiB,
    // 4 clones alive) with no measurable latency gain (docs/benchmarks.md).
    // A cold boot keeps them: its guest RAM is anonymous memory, where they
    // matter with KVM.
    opts.no_huge_pages = config_.boot == BootMode::kClone;
    VMF_ASSIGN_OR_RETURN(process_, ChildProcess::Spawn(argv, opts));
    // QEMU creates its sockets during start-up; connect as soon as the QMP
    // socket answers, and fail at once if QEMU exits instead.
    while (true) {
      if (auto st = process_.Poll()) {
        return Unavailable("QEMU exited during start-up (" + DescribeWaitStatus(*st) + "): " + LogTail());
      }
      auto qmp = qmp::QmpClient::Connect(qmp_socket(), Deadline(std::chrono::milliseconds(100)));
      if (qmp.ok()) {
        qmp_ = std::move(*qmp);
        return OkStatus();
      }
      if (deadline.expired()) {
        return qmp.status().WithContext("QEMU's QMP socket did not answer in time");
      }
    }
  }

  Status RestoreState(const Deadline& deadline) override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    VMF_RETURN_IF_ERROR(IgnoreSharedRam());
    UniqueFd state(::open(config_.device_state_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!state) return ErrnoStatus(errno, "open device state " + config_.device_state_path);
    VMF_RETURN_IF_ERROR(qmp_->ExecuteWithFd("getfd", json{{"fdname", "vmf-incoming"}}, state.get()).status());
    VMF_RETURN_IF_ERROR(qmp_->Execute("migrate-incoming", json{{"uri", "fd:vmf-incoming"}}).status());
    return WaitMigration(deadline, "restore");
  }

  Result<std::string> GenerationId() override {
    if (!qmp_) return FailedPrecondition("generation id: QEMU is not connected");
    VMF_ASSIGN_OR_RETURN(json r, qmp_->Execute("query-vm-generation-id"));
    if (!r.is_object() || !r.contains("guid") || !r["guid"].is_string()) {
      return DataLoss("query-vm-generation-id: no guid in " + r.dump().substr(0, 200));
    }
    return r["guid"].get<std::string>();
  }

  Status Pause() override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    return qmp_->Execute("stop").status();
  }

  Status Resume() override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    return qmp_->Execute("cont").status();
  }

  Status Save(const Deadline& deadline) override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    VMF_RETURN_IF_ERROR(IgnoreSharedRam());
    // Written under a temporary name: a failed save leaves no state file.
    VMF_ASSIGN_OR_RETURN(ScopedTempFile out, ScopedTempFile::Create(config_.device_state_path + ".tmp"));
    VMF_RETURN_IF_ERROR(qmp_->ExecuteWithFd("getfd", json{{"fdname", "vmf-outgoing"}}, out.fd()).status());
    VMF_RETURN_IF_ERROR(qmp_->Execute("migrate", json{{"uri", "fd:vmf-outgoing"}}).status());
    VMF_RETURN_IF_ERROR(WaitMigration(deadline, "save"));
    return out.Commit(config_.device_state_path);
  }

  void Stop() override {
    if (!process_.valid()) return;
    if (qmp_ && process_.Running()) {
      // An orderly quit lets QEMU remove its sockets; the kill below is the fallback.
      (void)qmp_->Execute("quit", nullptr, Deadline(std::chrono::seconds(2)));
      (void)process_.Wait(Deadline(std::chrono::seconds(3)));
    }
    qmp_.reset();
    process_.Stop(std::chrono::milliseconds(500));
  }

  Status AddCPUs(uint32_t count) override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    VMF_ASSIGN_OR_RETURN(json slots, qmp_->Execute("query-hotpluggable-cpus"));
    uint32_t added = 0;
    if (!slots.is_array()) return Internal("query-hotpluggable-cpus: unexpected reply");
    // QEMU lists slots from the highest id down; plug the lowest free first.
    for (auto it = slots.rbegin(); it != slots.rend() && added < count; ++it) {
      const json& slot = *it;
      if (!slot.is_object() || slot.contains("qom-path")) continue;
      json args = slot.value("props", json::object());
      if (!args.is_object()) continue;
      args["driver"] = slot.value("type", "");
      args["id"] = "vmf-cpu-" + std::to_string(++cpu_seq_);
      VMF_RETURN_IF_ERROR(qmp_->Execute("device_add", args).status());
      ++added;
    }
    if (added < count) {
      return ResourceExhausted("cannot add " + std::to_string(count) + " vCPUs: only " +
                               std::to_string(added) + " free slots (max_vcpus " +
                               std::to_string(config_.max_vcpus) + ")");
    }
    return OkStatus();
  }

  Status AddMemory(uint32_t mib) override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    int n = ++dimm_seq_;
    std::string mem = "vmf-mem" + std::to_string(n);
    std::string dimm = "vmf-dimm" + std::to_string(n);
    VMF_RETURN_IF_ERROR(
        qmp_->Execute("object-add",
                      json{{"qom-type", "memory-backend-ram"}, {"id", mem}, {"size", uint64_t{mib} << 20}})
            .status());
    Status st =
        qmp_->Execute("device_add", json{{"driver", "pc-dimm"}, {"id", dimm}, {"memdev", mem}}).status();
    if (!st.ok()) {
      (void)qmp_->Execute("object-del", json{{"id", mem}});
      return st;
    }
    return WaitGuestAccepted(dimm, Deadline(std::chrono::seconds(20)));
  }

  Status AddDisk(const std::string& serial, const std::string& path, bool read_only) override {
    VMF_RETURN_IF_ERROR(EnsureQmp());
    if (disks_.count(serial)) return AlreadyExists("a disk with serial " + serial + " is attached");
    if (DiskSlots(config_) == 0) {
      return FailedPrecondition(
          "disks are hot-added into PCIe root ports: they need machine type q35 and "
          "hypervisor.qemu.disk_slots > 0");
    }
    int slot = -1;
    for (uint32_t i = 0; i < DiskSlots(config_); ++i) {
      bool used = false;
      for (const auto& [s, taken] : disks_) used = used || taken == static_cast<int>(i);
      if (!used) {
        slot = static_cast<int>(i);
        break;
      }
    }
    if (slot < 0) {
      return ResourceExhausted("no free disk slot: all " + std::to_string(config_.qemu.disk_slots) +
                               " (hypervisor.qemu.disk_slots) are in use");
    }
    const std::string node = "vmf-disk-" + serial;
    VMF_RETURN_IF_ERROR(
        qmp_->Execute("blockdev-add",
                      json{{"node-name", node},
                           {"driver", "raw"},
                           {"read-only", read_only},
                           {"file", {{"driver", "file"}, {"filename", path}, {"read-only", read_only}}}})
            .status()
            .WithContext("cannot open disk image " + path));
    Status st = qmp_->Execute("device_add", json{{"driver", "virtio-blk-pci"},
                                                 {"id", node},
                                                 {"drive", node},
                                                 {"serial", serial},
                                                 {"bus", DiskPort(slot)}})
                    .status();
    if (!st.ok()) {
      (void)qmp_->Execute("blockdev-del", json{{"node-name", node}});
      return st.WithContext("cannot add disk " + serial);
    }
    disks_[serial] = slot;
    return OkStatus();
  }

  Status RemoveDisk(const std::string& serial) override {
    auto it = disks_.find(serial);
    if (it == disks_.end()) return NotFound("no disk with serial " + serial);
    VMF_RETURN_IF_ERROR(EnsureQmp());
    const std::string node = "vmf-disk-" + serial;
    Status st = qmp_->Execute("device_del", json{{"id", node}}).status();
    // The guest acknowledges the unplug (PCIe attention); until then the
    // device and its node stay. Bounded: a guest that never answers keeps
    // the slot, not us.
    Deadline deadline(std::chrono::seconds(10));
    while (st.ok() && !deadline.expired()) {
      auto r = qmp_->Execute("qom-list", json{{"path", "/machine/peripheral"}});
      if (!r.ok()) break;
      bool present = false;
      for (const auto& p : *r)
        if (p.is_object() && p.value("name", "") == node) present = true;
      if (!present) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // The node is released a moment after the device is gone.
    Status del;
    do {
      del = qmp_->Execute("blockdev-del", json{{"node-name", node}}).status();
      if (del.ok() || del.message().find("in use") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (!deadline.expired());
    if (del.ok()) disks_.erase(it);
    VMF_RETURN_IF_ERROR(st.WithContext("cannot remove disk " + serial));
    return del.WithContext("cannot release disk " + serial);
  }

  pid_t Release() override {
    qmp_.reset();
    return process_.Release();
  }

  Status Attach(pid_t pid, const Deadline& deadline) {
    process_ = ChildProcess::Adopt(pid);
    if (!process_.Running()) return Unavailable("QEMU (pid " + std::to_string(pid) + ") is not running");
    VMF_ASSIGN_OR_RETURN(qmp_, qmp::QmpClient::Connect(qmp_socket(), deadline));
    return OkStatus();
  }

  pid_t pid() const override { return process_.pid(); }
  bool Running() override { return process_.Running(); }
  qmp::QmpClient* qmp() { return qmp_.get(); }
  GuestEndpoints endpoints() const override { return {dir_ + "/agent.sock", dir_ + "/console.sock"}; }
  std::string control_endpoint() const override { return qmp_socket(); }
  std::optional<std::string> ErrorOutput() const override {
    std::string t = TailOfFile(log_path(), 2048);
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    if (t.empty()) return std::nullopt;
    return t;
  }

 private:
  std::string log_path() const { return dir_ + "/qemu.log"; }
  std::string qmp_socket() const { return dir_ + "/qmp.sock"; }
  std::string LogTail() const { return ErrorOutput().value_or("(no output)"); }

  // How QEMU runs: as the VM's uid, in a jail that holds its program and
  // libraries, kernel, initrd, own dir and the template's RAM file (read-only
  // in a clone), in namespaces of its own (no network: it has no NIC).
  Result<Confinement> Confine(const std::string& program, bool use_kvm) {
    const VmConfinement& v = config_.confinement;
    VMF_ASSIGN_OR_RETURN(Confinement c, VmProcessConfinement(v, dir_));
    if (config_.boot == BootMode::kClone && !v.readonly_open_lib.empty()) {
      c.env = {"LD_PRELOAD=" + v.readonly_open_lib, "VMF_READONLY_FILES=" + config_.memory_path};
    }
    if (config_.boot == BootMode::kTemplateSource && v.change_ids) {
      // The template VM writes its RAM file: it is made here, for the VM's uid.
      UniqueFd ram(::open(config_.memory_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!ram) return ErrnoStatus(errno, "create the template RAM file " + config_.memory_path);
      if (::fchown(ram.get(), v.uid, v.gid) != 0) {
        return ErrnoStatus(errno, "give the template RAM file " + config_.memory_path + " to the VM's uid");
      }
    }
    if (!v.jail) return c;
    JailBuilder jail(c.root_dir);
    jail.ReadOnly(program).ReadOnly(config_.kernel).ReadOnly(config_.initrd).Writable(dir_);
    if (use_kvm) jail.Device("/dev/kvm");
    if (config_.boot == BootMode::kClone) {
      jail.ReadOnly(config_.memory_path);
      if (!v.readonly_open_lib.empty()) jail.ReadOnly(v.readonly_open_lib);
    } else if (config_.boot == BootMode::kTemplateSource) {
      jail.Writable(config_.memory_path);
    }
    VMF_ASSIGN_OR_RETURN(c.steps, jail.Build());
    return c;
  }

  Status EnsureQmp() {
    if (!qmp_ || !process_.Running()) {
      return Unavailable("QEMU is not running" + (process_.valid() ? ": " + LogTail() : ""));
    }
    return OkStatus();
  }

  // Migration leaves out RAM that is in a shared file: the template's RAM
  // file is the clone's RAM, so only the device state is streamed.
  Status IgnoreSharedRam() {
    return qmp_
        ->Execute("migrate-set-capabilities",
                  json{{"capabilities", json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}})
        .status();
  }

  // The guest reports, through ACPI _OST, when it has taken a hot-added
  // device (for a DIMM: the memory is added and, with
  // memhp_default_state=online, online). Polls until it has.
  Status WaitGuestAccepted(const std::string& device, const Deadline& deadline) {
    auto sleep = std::chrono::milliseconds(2);
    while (true) {
      VMF_ASSIGN_OR_RETURN(json all, qmp_->Execute("query-acpi-ospm-status"));
      if (all.is_array()) {
        for (const json& e : all) {
          if (!e.is_object() || e.value("device", "") != device) continue;
          int status = e.value("status", -1);
          if (e.value("source", 0) == 1 && status == 0) return OkStatus();
          if (e.value("source", 0) == 1 && status > 0 && status != 0x80) {
            return Internal("the guest refused hot-added " + device + " (ACPI _OST status " +
                            std::to_string(status) + ")");
          }
        }
      }
      if (deadline.expired())
        return DeadlineExceeded("the guest did not take hot-added " + device + " in time");
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::milliseconds(50));
    }
  }

  // Polls query-migrate until it completes; fails on failed/cancelled, on a
  // state that never moves, and at the deadline.
  Status WaitMigration(const Deadline& deadline, const std::string& what) {
    auto sleep = std::chrono::milliseconds(1);
    while (true) {
      VMF_ASSIGN_OR_RETURN(json info, qmp_->Execute("query-migrate"));
      std::string status = info.is_object() ? info.value("status", "") : "";
      if (status == "completed") return OkStatus();
      if (status == "failed" || status == "cancelled") {
        std::string err = info.is_object() ? info.value("error-desc", "") : "";
        return DataLoss(what + " of the VM state failed" + (err.empty() ? "" : ": " + err));
      }
      if (!process_.Running()) return Unavailable("QEMU exited during " + what + ": " + LogTail());
      if (deadline.expired()) {
        return DeadlineExceeded(what + " of the VM state did not complete in time (status '" + status + "')");
      }
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::milliseconds(20));
    }
  }

  std::string id_;
  HypervisorConfig config_;
  std::string dir_;
  ChildProcess process_;
  std::unique_ptr<qmp::QmpClient> qmp_;
  int cpu_seq_ = 0;
  int dimm_seq_ = 0;
  std::map<std::string, int> disks_;  // serial -> disk slot
};

std::string MiB(uint32_t m) { return std::to_string(m) + "M"; }

class Backend : public HypervisorBackend {
 public:
  std::string_view name() const override { return "qemu"; }

  Status Validate(const HypervisorConfig& h) const override {
    if (FindProgram(h.qemu.path).empty()) {
      return NotFound("hypervisor.qemu.path: '" + h.qemu.path +
                      "' is not an executable (install qemu-system-x86)");
    }
    if (h.qemu.machine != "q35" && h.qemu.machine != "pc") {
      return InvalidArgument("hypervisor.qemu.machine: '" + h.qemu.machine +
                             "' is not supported (q35 or pc)");
    }
    if (h.qemu.memory_slots > 256) return InvalidArgument("hypervisor.qemu.memory_slots: at most 256");
    if (h.qemu.disk_slots > 32) return InvalidArgument("hypervisor.qemu.disk_slots: at most 32");

    if (h.qemu.accel == Accel::kKvm && !KvmUsable()) {
      return FailedPrecondition("hypervisor.qemu.accel: kvm requested but /dev/kvm is not usable here");
    }
    return OkStatus();
  }

  Result<std::unique_ptr<Hypervisor>> Create(const std::string& id, const HypervisorConfig& config,
                                             const std::string& dir) override {
    return std::unique_ptr<Hypervisor>(std::make_unique<QemuHypervisor>(id, config, dir));
  }

  Result<std::unique_ptr<Hypervisor>> Attach(const std::string& id, const HypervisorConfig& config,
                                             const std::string& dir, pid_t pid,
                                             const Deadline& deadline) override {
    auto h = std::make_unique<QemuHypervisor>(id, config, dir);
    Status st = h->Attach(pid, deadline);
    if (!st.ok()) {
      h->Release();  // not ours to stop when attaching failed
      return st;
    }
    return std::unique_ptr<Hypervisor>(std::move(h));
  }
};

}  // namespace

HypervisorBackend& QemuBackend() {
  static Backend backend;
  return backend;
}

qmp::QmpClient* QemuQmp(Hypervisor& h) {
  auto* q = dynamic_cast<QemuHypervisor*>(&h);
  return q ? q->qmp() : nullptr;
}

bool QemuUsesKvm(const HypervisorConfig& c) {
  return c.qemu.accel == Accel::kKvm || (c.qemu.accel == Accel::kAuto && KvmUsable());
}

bool KvmUsable() {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm) return false;
  if (::ioctl(kvm.get(), KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return false;
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (!vm) return false;
  // Some sandboxes expose a /dev/kvm that creates VMs but cannot run a
  // real CPU model; hardware virtualisation shows in the CPU flags.
  auto cpuinfo = ReadFile("/proc/cpuinfo", 16 << 20);
  if (!cpuinfo.ok()) return false;
  return cpuinfo->find(" vmx") != std::string::npos || cpuinfo->find(" svm") != std::string::npos;
}

std::vector<std::string> QemuArgv(const std::string& id, const HypervisorConfig& c, const std::string& dir,
                                  const QemuArgvOptions& options) {
  const bool use_kvm = options.use_kvm;
  std::string machine = c.qemu.machine + ",accel=" + (use_kvm ? "kvm" : "tcg") + ",memory-backend=vmf-ram";
  std::string backend;
  if (c.boot != BootMode::kCold) {
    // The template's RAM lives in a file: shared while the template boots
    // (so the file holds it), private copy-on-write in each clone.
    backend = "memory-backend-file,id=vmf-ram,size=" + MiB(c.memory_mib) + ",mem-path=" + c.memory_path +
              ",share=" + (c.boot == BootMode::kTemplateSource ? "on" : "off");
  } else {
    backend = "memory-backend-ram,id=vmf-ram,size=" + MiB(c.memory_mib);
  }
  std::string params = kBaseKernelParams;
  if (!c.kernel_params.empty()) params += " " + c.kernel_params;
  std::vector<std::string> argv = {
      c.qemu.path,
      "-name",
      "vmf-" + id,
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-vga",
      "none",
      "-no-reboot",
      "-machine",
      machine,
      "-cpu",
      use_kvm ? "host" : "max",
      "-smp",
      std::to_string(c.vcpus) + ",sockets=" + std::to_string(c.max_vcpus) +
          ",cores=1,threads=1,maxcpus=" + std::to_string(c.max_vcpus),
      "-m",
      MiB(c.memory_mib) + ",slots=" + std::to_string(c.qemu.memory_slots) +
          ",maxmem=" + MiB(c.max_memory_mib),
      "-object",
      backend,
      "-kernel",
      c.kernel,
      "-initrd",
      c.initrd,
      "-append",
      params,
      "-chardev",
      "socket,id=vmf-console,path=" + dir + "/console.sock,server=on,wait=off",
      "-serial",
      "chardev:vmf-console",
      // A VM generation id, new for every QEMU process ("auto"): a clone
      // shows its guest another GUID than the template's (written into
      // guest memory when its state is loaded, with an ACPI notification
      // that a kernel with the vmgenid driver reseeds its CRNG on).
      "-device",
      "vmgenid,guid=auto,id=vmf-vmgenid",
      "-device",
      "virtio-serial-pci,id=vmf-serial",
      "-chardev",
      "socket,id=vmf-agent,path=" + dir + "/agent.sock,server=on,wait=off",
      "-device",
      "virtserialport,chardev=vmf-agent,name=agent.0",
      "-chardev",
      "socket,id=vmf-qmp,path=" + dir + "/qmp.sock,server=on,wait=off",
      "-mon",
      "chardev=vmf-qmp,mode=control",
  };
  for (uint32_t i = 0; i < DiskSlots(c); ++i) {
    argv.emplace_back("-device");
    argv.emplace_back("pcie-root-port,id=" + DiskPort(static_cast<int>(i)) +
                      ",bus=pcie.0,chassis=" + std::to_string(i + 1));
  }
  if (c.confinement.sandbox) {
    // QEMU's own seccomp filter: no obsolete calls, no setuid, no fork or
    // exec (migration goes through fds we hand it), no scheduler or
    // resource changes.
    argv.emplace_back("-sandbox");
    argv.emplace_back("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
  }
  if (c.boot == BootMode::kClone) {
    argv.emplace_back("-incoming");
    argv.emplace_back("defer");
  }
  argv.insert(argv.end(), c.qemu.extra_args.begin(), c.qemu.extra_args.end());
  return argv;
}

}  // namespace vmf
