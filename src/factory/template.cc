#include "factory/template.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/failpoint.h"
#include "common/io.h"
#include "common/scoped.h"
#include "common/scoped_dir.h"
#include "factory/digest.h"
#include "vm/vm.h"

namespace vmf {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr size_t kMaxTemplateJson = 64 * 1024;

bool IsMountPoint(const std::string& dir) {
  struct stat a {
  }, b{};
  if (::stat(dir.c_str(), &a) != 0) return false;
  if (::stat((dir + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

json HypervisorToJson(const HypervisorConfig& h) {
  return json{{"backend", h.backend},
              {"kernel", h.kernel},
              {"initrd", h.initrd},
              {"machine", h.qemu.machine},
              {"kernel_params", h.kernel_params},
              {"vcpus", h.vcpus},
              {"max_vcpus", h.max_vcpus},
              {"memory_mib", h.memory_mib},
              {"memory_slots", h.qemu.memory_slots},
              {"disk_slots", h.qemu.disk_slots},
              {"max_memory_mib", h.max_memory_mib}};
}

Status HypervisorFromJson(const json& j, const std::string& file, HypervisorConfig* h) {
  try {
    h->backend = j.value("backend", std::string("qemu"));
    h->kernel = j.at("kernel").get<std::string>();
    h->initrd = j.at("initrd").get<std::string>();
    h->qemu.machine = j.at("machine").get<std::string>();
    h->kernel_params = j.at("kernel_params").get<std::string>();
    h->vcpus = j.at("vcpus").get<uint32_t>();
    h->max_vcpus = j.at("max_vcpus").get<uint32_t>();
    h->memory_mib = j.at("memory_mib").get<uint32_t>();
    h->qemu.memory_slots = j.at("memory_slots").get<uint32_t>();
    h->qemu.disk_slots = j.at("disk_slots").get<uint32_t>();
    h->max_memory_mib = j.at("max_memory_mib").get<uint32_t>();
  } catch (const json::exception& e) {
    return DataLoss(file + ": bad hypervisor section: " + e.what());
  }
  return OkStatus();
}

// Checks that path is a readable regular file of exactly `size` bytes.
Status CheckFile(const std::string& what, const std::string& path, uint64_t size) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return ErrnoStatus(errno, "template " + what + " file " + path);
  }
  if (!S_ISREG(st.st_mode)) return DataLoss("template " + what + " file " + path + " is not a regular file");
  if (::access(path.c_str(), R_OK) != 0) return ErrnoStatus(errno, "template " + what + " file " + path);
  if (static_cast<uint64_t>(st.st_size) != size) {
    return DataLoss("template " + what + " file " + path + " is " + std::to_string(st.st_size) +
                    " bytes, expected " + std::to_string(size) +
                    (static_cast<uint64_t>(st.st_size) < size ? " (truncated)" : ""));
  }
  return OkStatus();
}

// A template is code and data QEMU will load: only we may have written it.
// Checks that path is ours and not writable by group or others.
Status CheckPrivate(const std::string& what, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, what + " " + path);
  if (st.st_uid != ::geteuid()) {
    return PermissionDenied(what + " " + path + " belongs to uid " + std::to_string(st.st_uid) +
                            ", not to us (uid " + std::to_string(::geteuid()) + "): refusing to use it");
  }
  if ((st.st_mode & 022) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return PermissionDenied(what + " " + path + " is writable by group or others (mode " + mode +
                            "): refusing to use it; recreate the template with `vmfactory init --force`");
  }
  return OkStatus();
}

// Room for the device state and metadata beside the RAM file.
constexpr uint64_t kTemplateSpareMib = 64;

Status CheckFreeSpace(const std::string& root, uint64_t need_mib) {
  struct statvfs vfs {};
  if (::statvfs(root.c_str(), &vfs) != 0) return ErrnoStatus(errno, "template root " + root);
  if (vfs.f_flag & ST_RDONLY)
    return FailedPrecondition("template root " + root + " is on a read-only filesystem");
  uint64_t free_mib = (static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize) >> 20;
  if (free_mib < need_mib) {
    return ResourceExhausted("template root " + root + " has " + std::to_string(free_mib) +
                             " MiB free; a template of this size needs about " + std::to_string(need_mib) +
                             " MiB (RAM file, device state, metadata)");
  }
  return OkStatus();
}

// Points ROOT/current at gen atomically (a new link renamed over the old).
Status PublishGeneration(const std::string& root, const std::string& gen_name) {
  std::string tmp = root + "/.current.tmp";
  ::unlink(tmp.c_str());
  if (::symlink(gen_name.c_str(), tmp.c_str()) != 0) return ErrnoStatus(errno, "symlink " + tmp);
  if (::rename(tmp.c_str(), (root + "/current").c_str()) != 0) {
    Status st = ErrnoStatus(errno, "rename " + tmp);
    ::unlink(tmp.c_str());
    return st;
  }
  return OkStatus();
}

// Removes generations that `current` does not point at. Clones still
// running keep their private mapping of a removed memory file.
void RemoveOldGenerations(const std::string& root, const std::string& keep) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::string name = e.path().filename();
    if (name.rfind("gen-", 0) == 0 && name != keep) fs::remove_all(e.path(), ec);
  }
}

// Reads the generation `current` points at; any problem, a missing file
// among them, is reported as it is (LoadTemplate makes it DATA_LOSS).
Result<TemplateInfo> LoadGeneration(const std::string& root, const std::string& current) {
  std::error_code ec;
  std::string gen_name = fs::read_symlink(current, ec).string();
  if (ec || gen_name.rfind("gen-", 0) != 0 || gen_name.find('/') != std::string::npos) {
    return DataLoss(current + " does not point at a template generation");
  }
  TemplateInfo t;
  t.root = root;
  t.generation = root + "/" + gen_name;
  std::string meta_path = t.generation + "/template.json";
  VMF_RETURN_IF_ERROR(CheckPrivate("template root", root));
  VMF_RETURN_IF_ERROR(CheckPrivate("template generation", t.generation));
  VMF_RETURN_IF_ERROR(CheckPrivate("template file", meta_path));
  VMF_ASSIGN_OR_RETURN(std::string text, ReadFile(meta_path, kMaxTemplateJson));
  json meta = json::parse(text, nullptr, false);
  if (meta.is_discarded() || !meta.is_object())
    return DataLoss("template file " + meta_path + " is not valid JSON");
  t.format_version = meta.value("format_version", 0);
  if (t.format_version != kTemplateFormatVersion) {
    return FailedPrecondition("template " + meta_path + " has format version " +
                              std::to_string(t.format_version) + ", this vmfactory reads version " +
                              std::to_string(kTemplateFormatVersion) +
                              " (recreate it with `vmfactory init --force`)");
  }
  if (!meta.contains("hypervisor") || !meta["hypervisor"].is_object()) {
    return DataLoss("template file " + meta_path + " has no hypervisor section");
  }
  VMF_RETURN_IF_ERROR(HypervisorFromJson(meta["hypervisor"], meta_path, &t.hypervisor));
  t.created_unix = meta.value("created_unix", int64_t{0});
  t.memory_bytes = meta.value("memory_bytes", uint64_t{0});
  t.state_bytes = meta.value("state_bytes", uint64_t{0});
  t.memory_sha256 = meta.value("memory_sha256", "");
  t.state_sha256 = meta.value("state_sha256", "");
  t.memory_stamp = meta.value("memory_stamp", "");
  t.state_stamp = meta.value("state_stamp", "");
  if (t.memory_sha256.size() != 64 || t.state_sha256.size() != 64) {
    return DataLoss("template file " + meta_path + " records no valid digests of its files");
  }
  if (t.memory_bytes != (uint64_t{t.hypervisor.memory_mib} << 20)) {
    return DataLoss("template file " + meta_path + " records " + std::to_string(t.memory_bytes) +
                    " bytes of memory for a " + std::to_string(t.hypervisor.memory_mib) + " MiB VM");
  }
  if (t.state_bytes == 0) return DataLoss("template file " + meta_path + " records an empty device state");
  VMF_RETURN_IF_ERROR(CheckFile("memory", t.memory_path(), t.memory_bytes));
  VMF_RETURN_IF_ERROR(CheckFile("state", t.state_path(), t.state_bytes));
  VMF_RETURN_IF_ERROR(CheckPrivate("template memory file", t.memory_path()));
  VMF_RETURN_IF_ERROR(CheckPrivate("template state file", t.state_path()));
  VMF_RETURN_IF_ERROR(CheckDigest("template state file", t.state_path(), t.state_sha256, t.state_stamp));
  VMF_RETURN_IF_ERROR(CheckDigest("template memory file", t.memory_path(), t.memory_sha256, t.memory_stamp));
  t.boot_stub_bytes = meta.value("boot_stub_bytes", uint64_t{0});
  if (t.boot_stub_bytes != 0) {
    VMF_RETURN_IF_ERROR(CheckFile("boot stub", t.boot_stub_path(), t.boot_stub_bytes));
    VMF_RETURN_IF_ERROR(CheckPrivate("template boot stub", t.boot_stub_path()));
  }
  return t;
}

}  // namespace

std::string DefaultTemplateRoot(const std::string& runtime_dir) { return runtime_dir + "/template"; }

Result<TemplateInfo> LoadTemplate(const std::string& root) {
  std::string current = root + "/current";
  std::error_code ec;
  if (!fs::exists(root, ec))
    return NotFound("no template at " + root + " (create one with `vmfactory init`)");
  if (!fs::is_symlink(current, ec))
    return NotFound("no template at " + root + ": " + current + " is missing");
  // There is a template: whatever is wrong with it now is damage, never
  // "no template" (a file of it that is missing included).
  auto t = LoadGeneration(root, current);
  if (!t.ok() && t.status().code() == Code::kNotFound) return DataLoss(t.status().message());
  return t;
}

Result<TemplateInfo> CreateTemplate(const VMConfig& base, const std::string& root,
                                    const TemplateOptions& options) {
  auto step = [&](const std::string& s) {
    if (options.progress) options.progress(s);
  };
  VMF_RETURN_IF_ERROR(base.Validate(options.deps.backend));
  if (!options.force) {
    auto existing = LoadTemplate(root);
    if (existing.ok()) {
      return AlreadyExists("a template already exists at " + root + " (use --force to replace it)");
    }
  }
  // 1. The private root: a tmpfs sized for two generations when we may mount.
  //    An existing root must be ours; it is made private (0700).
  VMF_RETURN_IF_ERROR(MakeDirs(root).WithContext("template root"));
  struct stat root_st {};
  if (::stat(root.c_str(), &root_st) != 0) return ErrnoStatus(errno, "template root " + root);
  if (!S_ISDIR(root_st.st_mode)) return FailedPrecondition("template root " + root + " is not a directory");
  if (root_st.st_uid != ::geteuid()) VMF_RETURN_IF_ERROR(CheckPrivate("template root", root));
  if ((root_st.st_mode & 07777) != 0700 && ::chmod(root.c_str(), 0700) != 0) {
    return ErrnoStatus(errno, "template root " + root + ": cannot make it private (chmod 0700)");
  }
  // A tmpfs mounted here is kept only if this init succeeds.
  ScopedMount tmpfs;
  if (options.mount_tmpfs && ::geteuid() == 0 && !IsMountPoint(root)) {
    uint64_t size_mib = 2ull * base.hypervisor.memory_mib + 64;
    std::string opts = "size=" + std::to_string(size_mib) + "m,mode=0700";
    auto m = ScopedMount::Mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts);
    if (m.ok()) {
      tmpfs = std::move(*m);
      step("mounted a " + std::to_string(size_mib) + " MiB tmpfs at " + root);
    } else {
      step("could not mount a tmpfs at " + root + " (" + m.status().message() +
           "); using the directory as is");
    }
  }
  // The RAM file fills as the guest touches memory; a full filesystem would
  // kill QEMU with SIGBUS mid-boot. Refuse up front instead.
  VMF_RETURN_IF_ERROR(CheckFreeSpace(root, base.hypervisor.memory_mib + kTemplateSpareMib));
  // 2. A new generation, invisible until published.
  std::string gen_name = "gen-" + NewVmId().substr(0, 12);
  VMF_ASSIGN_OR_RETURN(ScopedDir gen, ScopedDir::Create(root + "/" + gen_name, 0700));
  VMConfig config = base;
  config.hypervisor.boot = BootMode::kTemplateSource;
  config.hypervisor.memory_path = gen.path() + "/memory";
  config.hypervisor.device_state_path = gen.path() + "/state";

  // 3. Boot it and wait for the agent.
  step("booting the template VM (" + std::to_string(config.hypervisor.vcpus) + " vCPUs, " +
       std::to_string(config.hypervisor.memory_mib) + " MiB)");
  VMF_ASSIGN_OR_RETURN(auto vm, VM::Create(config, nullptr, nullptr, options.deps));
  // 4. No host client may be connected when the state is saved.
  failpoint::Hit(failpoint::kTemplateSave,
                 {.vm_id = vm->id(), .vmm_pid = vm->vmm_pid(), .proxy_pid = vm->proxy_pid()});
  step("disconnecting the agent and proxy");
  vm->Disconnect();
  step("pausing");
  VMF_RETURN_IF_ERROR(vm->Pause());
  step("saving the device state");
  VMF_RETURN_IF_ERROR(vm->Save());
  step("stopping the template VM");
  vm->Stop();

  // 5. Nothing may write the files again: ours, read-only, and digested so
  //    that a change made anyway is caught whenever the template is used.
  for (const std::string& f : {config.hypervisor.memory_path, config.hypervisor.device_state_path}) {
    if (::chown(f.c_str(), ::geteuid(), ::getegid()) != 0 || ::chmod(f.c_str(), 0444) != 0) {
      return ErrnoStatus(errno, "make template file " + f + " read-only");
    }
  }
  step("digesting the RAM and state files");
  VMF_ASSIGN_OR_RETURN(const std::string memory_sha256, Sha256File(config.hypervisor.memory_path));
  VMF_ASSIGN_OR_RETURN(const std::string state_sha256, Sha256File(config.hypervisor.device_state_path));
  // The versions hashed: a use that finds the same need not hash again.
  VMF_ASSIGN_OR_RETURN(const std::string memory_stamp, FileStamp(config.hypervisor.memory_path));
  VMF_ASSIGN_OR_RETURN(const std::string state_stamp, FileStamp(config.hypervisor.device_state_path));

  // 6. What its clones' QEMUs load instead of the kernel, which they never
  //    boot: without it each holds a copy of the kernel image in its memory.
  auto stub = BootStubOf(config.hypervisor.kernel);
  if (!stub.ok() && stub.status().code() != Code::kNotFound) return stub.status();
  if (stub.ok()) VMF_RETURN_IF_ERROR(WriteFileAtomic(gen.path() + "/boot-stub", *stub, 0444));

  // 7. Describe it, then publish it.
  struct stat st {};
  if (::stat(config.hypervisor.device_state_path.c_str(), &st) != 0) {
    return ErrnoStatus(errno, "stat " + config.hypervisor.device_state_path);
  }
  json meta = {{"format_version", kTemplateFormatVersion},
               {"created_unix", static_cast<int64_t>(::time(nullptr))},
               {"vmfactory_version", VMF_VERSION},
               {"memory_bytes", uint64_t{config.hypervisor.memory_mib} << 20},
               {"state_bytes", static_cast<uint64_t>(st.st_size)},
               {"memory_sha256", memory_sha256},
               {"state_sha256", state_sha256},
               {"memory_stamp", memory_stamp},
               {"state_stamp", state_stamp},
               {"boot_stub_bytes", stub.ok() ? stub->size() : size_t{0}},
               {"hypervisor", HypervisorToJson(config.hypervisor)}};
  VMF_RETURN_IF_ERROR(WriteFileAtomic(gen.path() + "/template.json", meta.dump(2) + "\n", 0600));
  step("publishing " + gen.path());
  VMF_RETURN_IF_ERROR(PublishGeneration(root, gen_name));
  gen.Release();
  tmpfs.Release();
  RemoveOldGenerations(root, gen_name);
  return LoadTemplate(root);
}

Status DestroyTemplate(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) return NotFound("no template at " + root);
  // Remove the contents first (a tmpfs mount point itself cannot be removed
  // while mounted), then unmount, then the directory.
  for (const auto& e : fs::directory_iterator(root, ec)) fs::remove_all(e.path(), ec);
  if (IsMountPoint(root) && ::umount2(root.c_str(), MNT_DETACH) != 0) {
    return ErrnoStatus(errno, "unmount " + root);
  }
  fs::remove_all(root, ec);
  if (ec) return Internal("remove " + root + ": " + ec.message());
  return OkStatus();
}

Status HypervisorMismatch(const HypervisorConfig& a, const HypervisorConfig& b, const std::string& whose) {
  const std::string of = " " + whose + "'s ";
  auto differs = [&](const std::string& what) { return FailedPrecondition(what); };
  if (a.backend != b.backend) return differs("backend " + b.backend + " differs from" + of + a.backend);
  if (a.kernel != b.kernel) return differs("kernel " + b.kernel + " differs from" + of + a.kernel);
  if (a.initrd != b.initrd) return differs("initrd " + b.initrd + " differs from" + of + a.initrd);
  if (a.qemu.machine != b.qemu.machine) {
    return differs("machine " + b.qemu.machine + " differs from" + of + a.qemu.machine);
  }
  if (a.kernel_params != b.kernel_params)
    return differs("kernel parameters differ from" + of.substr(0, of.size() - 1));
  if (b.vcpus < a.vcpus)
    return differs(std::to_string(b.vcpus) + " vCPUs is fewer than" + of + std::to_string(a.vcpus));
  if (b.vcpus > a.max_vcpus) {
    return differs(std::to_string(b.vcpus) + " vCPUs is more than" + of + "hotplug ceiling " +
                   std::to_string(a.max_vcpus));
  }
  if (b.memory_mib < a.memory_mib) {
    return differs(std::to_string(b.memory_mib) + " MiB is less than" + of + std::to_string(a.memory_mib));
  }
  if (b.memory_mib > a.max_memory_mib) {
    return differs(std::to_string(b.memory_mib) + " MiB is more than" + of + "hotplug ceiling " +
                   std::to_string(a.max_memory_mib));
  }
  return OkStatus();
}

Status TemplateMismatch(const TemplateInfo& t, const VMConfig& req) {
  return HypervisorMismatch(t.hypervisor, req.hypervisor, "the template");
}

VMConfig CloneConfig(const TemplateInfo& t, const VMConfig& request) {
  VMConfig c = request;
  c.hypervisor = t.hypervisor;
  c.hypervisor.qemu.path = request.hypervisor.qemu.path;
  c.hypervisor.qemu.accel = request.hypervisor.qemu.accel;
  c.hypervisor.boot = BootMode::kClone;
  c.hypervisor.memory_path = t.memory_path();
  c.hypervisor.device_state_path = t.state_path();
  if (t.boot_stub_bytes != 0) c.hypervisor.kernel = t.boot_stub_path();
  return c;
}

Result<std::string> BootStubOf(const std::string& kernel) {
  // The x86 boot protocol: "HdrS" at 0x202, the number of 512-byte setup
  // sectors after the boot sector at 0x1f1 (0 means 4); at most 64 KiB in all.
  constexpr size_t kMagicAt = 0x202, kSetupSectsAt = 0x1f1, kMaxSetup = 64 << 10;
  VMF_ASSIGN_OR_RETURN(std::string head, ReadFilePrefix(kernel, kMaxSetup + 1));
  if (head.size() < kMagicAt + 4 || head.compare(kMagicAt, 4, "HdrS") != 0) {
    return NotFound(kernel + " is not an x86 bzImage (no boot header)");
  }
  const size_t sects = static_cast<unsigned char>(head[kSetupSectsAt]);
  const size_t setup = ((sects == 0 ? 4 : sects) + 1) * 512;
  if (setup > kMaxSetup || head.size() <= setup) {
    return NotFound(kernel + ": its boot header gives " + std::to_string(setup) + " setup bytes in a " +
                    std::to_string(head.size()) + "-byte prefix");
  }
  return head.substr(0, setup) + std::string(4096, '\0');
}

}  // namespace vmf
