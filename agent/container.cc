#include "container.h"

#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include "common/ids.h"
#include "log.h"

namespace vmf::agent {
namespace {

// Per-mount flags a bind's remount can set.
constexpr unsigned long kBindRemountFlags =
    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME;

MountStep Mount(const char* source, const char* target, const char* fstype, unsigned long flags,
                const char* data, bool optional = false) {
  MountStep m;
  m.source = source;
  m.target = target;
  m.fstype = fstype;
  m.flags = flags;
  m.data = data;
  m.optional = optional;
  return m;
}

std::vector<MountStep> DefaultMounts() {
  return {
      Mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""),
      Mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"),
      Mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
      Mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"),
      Mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, "", /*optional=*/true),
      Mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, ""),
  };
}

std::string Normalized(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

Status CheckText(const std::string& what, const std::string& s, size_t max) {
  if (s.size() > max) return InvalidArgument(what + " is longer than " + std::to_string(max) + " bytes");
  if (s.find('\0') != std::string::npos) return InvalidArgument(what + " contains a NUL byte");
  return OkStatus();
}

Result<MountStep> FromSpec(const grpc::Mount& sm) {
  const std::string dest = Normalized(sm.destination());
  VMF_RETURN_IF_ERROR(CheckGuestPath("mount destination", dest));
  if (dest == "/") return InvalidArgument("a mount on / (the root is Root.Path)");
  VMF_RETURN_IF_ERROR(CheckText("mount type", sm.type(), 64));
  VMF_RETURN_IF_ERROR(CheckText("mount source", sm.source(), kMaxPathLength));
  if (sm.options_size() > static_cast<int>(kMaxOptions))
    return InvalidArgument("too many options for the mount on " + dest);
  for (const std::string& o : sm.options()) VMF_RETURN_IF_ERROR(CheckText("mount option", o, kMaxPathLength));
  MountOptions o = ParseMountOptions(std::vector<std::string>(sm.options().begin(), sm.options().end()));
  MountStep m;
  m.target = dest;
  m.propagation = o.propagation;
  if (sm.type() == "bind" || o.bind) {
    VMF_RETURN_IF_ERROR(CheckGuestPath("bind mount source", sm.source()));
    m.kind = MountStep::Kind::kBind;
    m.source = sm.source();
    m.recursive = o.recursive;
    m.flags = o.flags & kBindRemountFlags;
    return m;
  }
  if (sm.type().empty()) return InvalidArgument("the mount on " + dest + " has no type");
  m.kind = MountStep::Kind::kMount;
  m.fstype = sm.type();
  m.source = sm.source().empty() ? sm.type() : sm.source();
  m.flags = o.flags & ~MS_REMOUNT;
  m.data = o.data;
  m.optional = sm.type() == "mqueue";
  return m;
}

}  // namespace

Status ValidateContainerId(const std::string& what, const std::string& id) { return ValidateId(what, id); }

Result<ContainerInit> PrepareContainerInit(const grpc::Spec& spec) {
  if (!spec.has_process() || spec.process().args_size() == 0)
    return InvalidArgument("the spec has no Process.Args");
  for (const grpc::POSIXRlimit& r : spec.process().rlimits())
    if (RlimitResource(r.type()) < 0)
      return InvalidArgument("unknown rlimit type '" + r.type().substr(0, 64) + "'");
  if (!spec.has_root() || spec.root().path().empty()) return InvalidArgument("the spec has no Root.Path");
  ContainerInit init;
  init.rootfs = Normalized(spec.root().path());
  VMF_RETURN_IF_ERROR(CheckGuestPath("Root.Path", init.rootfs));
  if (init.rootfs == "/") return InvalidArgument("Root.Path is the guest's /");
  init.readonly_root = spec.root().readonly();
  VMF_RETURN_IF_ERROR(CheckText("Hostname", spec.hostname(), 64));
  init.hostname = spec.hostname();

  if (spec.mounts_size() > static_cast<int>(kMaxContainerMounts))
    return InvalidArgument("too many mounts (" + std::to_string(spec.mounts_size()) + ")");
  init.mounts = DefaultMounts();
  const size_t defaults = init.mounts.size();
  for (const grpc::Mount& sm : spec.mounts()) {
    if (sm.type() == "cgroup" || sm.type() == "cgroup2") continue;  // not served: no cgroup namespace
    VMF_ASSIGN_OR_RETURN(MountStep m, FromSpec(sm));
    bool replaced = false;
    for (size_t i = 0; i < defaults && !replaced; ++i) {
      if (init.mounts[i].target != m.target) continue;
      init.mounts[i] = m;
      replaced = true;
    }
    if (!replaced) init.mounts.push_back(std::move(m));
  }
  const MountStep& dev = init.mounts[1];
  init.populate_dev = dev.kind == MountStep::Kind::kMount && dev.fstype == "tmpfs";

  const grpc::Linux& lx = spec.linux();
  if (lx.maskedpaths_size() > static_cast<int>(kMaxContainerPaths) ||
      lx.readonlypaths_size() > static_cast<int>(kMaxContainerPaths))
    return InvalidArgument("too many masked or read-only paths");
  for (const std::string& p : lx.maskedpaths()) {
    VMF_RETURN_IF_ERROR(CheckGuestPath("masked path", p));
    init.masked_paths.push_back(p);
  }
  for (const std::string& p : lx.readonlypaths()) {
    VMF_RETURN_IF_ERROR(CheckGuestPath("read-only path", p));
    init.readonly_paths.push_back(p);
  }
  return init;
}

Containers::~Containers() {
  for (auto& [id, c] : containers_) {
    c->cgroup.Remove();
    for (auto it = c->storages.rbegin(); it != c->storages.rend(); ++it) UnmountStorage(*it);
  }
}

Status Containers::Check(const grpc::CreateContainerRequest& req) const {
  VMF_RETURN_IF_ERROR(ValidateContainerId("container id", req.container_id()));
  VMF_RETURN_IF_ERROR(ValidateContainerId("exec id", req.exec_id()));
  if (containers_.count(req.container_id()) != 0)
    return AlreadyExists("container " + req.container_id() + " exists");
  if (containers_.size() >= opt_.max_containers)
    return ResourceExhausted("too many containers (" + std::to_string(containers_.size()) + ")");
  if (req.storages_size() > static_cast<int>(kMaxStorages)) return InvalidArgument("too many storages");
  for (const grpc::Storage& s : req.storages()) VMF_RETURN_IF_ERROR(CheckStorage(s));
  if (!req.has_oci()) return InvalidArgument("no OCI spec");
  Result<ContainerInit> init = PrepareContainerInit(req.oci());
  return init.ok() ? OkStatus() : init.status();
}

Status Containers::Create(const grpc::CreateContainerRequest& req) {
  VMF_RETURN_IF_ERROR(Check(req));
  auto c = std::make_unique<Container>();
  c->id = req.container_id();
  c->exec_id = req.exec_id();
  c->spec = req.oci();
  VMF_ASSIGN_OR_RETURN(c->init, PrepareContainerInit(c->spec));
  for (const grpc::LinuxNamespace& ns : c->spec.linux().namespaces()) {
    if (ns.path().rfind(kShareNamespacePrefix, 0) != 0) continue;
    const std::string other = ns.path().substr(sizeof(kShareNamespacePrefix) - 1);
    if (ns.type() != "ipc" && ns.type() != "uts" && ns.type() != "pid")
      return InvalidArgument("namespace " + ns.type().substr(0, 16) +
                             " cannot be shared with another container");
    VMF_RETURN_IF_ERROR(ValidateContainerId("the container to share namespaces with", other));
    if (other == c->id) return InvalidArgument("container " + c->id + " cannot share its own namespaces");
    c->share[ns.type()] = other;
  }
  auto undo = [&c] {
    c->cgroup.Remove();
    for (auto it = c->storages.rbegin(); it != c->storages.rend(); ++it) UnmountStorage(*it);
  };
  for (const grpc::Storage& s : req.storages()) {
    Result<MountedStorage> m = MountStorage(opt_.storage, s);
    if (!m.ok()) {
      undo();
      return m.status().WithContext("storage " + s.driver() + " " + s.source());
    }
    c->storages.push_back(std::move(*m));
  }
  struct stat st;
  if (::stat(c->init.rootfs.c_str(), &st) != 0) {
    Status err = ErrnoStatus(errno, "the rootfs " + c->init.rootfs);
    undo();
    return err;
  }
  if (!S_ISDIR(st.st_mode)) {
    undo();
    return FailedPrecondition("the rootfs " + c->init.rootfs + " is not a directory");
  }
  Result<ContainerCgroup> cg = ContainerCgroup::Create(opt_.cgroup, c->id);
  if (cg.ok()) {
    c->cgroup = std::move(*cg);
    if (c->spec.linux().has_resources()) {
      Status st2 = c->cgroup.Apply(c->spec.linux().resources());
      if (!st2.ok()) {
        undo();
        return st2;
      }
    }
  } else if (cg.status().code() == Code::kUnavailable) {
    if (c->spec.linux().has_resources())
      Log("container %s: %s: its resource limits are not applied", c->id.c_str(),
          cg.status().message().c_str());
  } else {
    undo();
    return cg.status().WithContext("cgroup");
  }
  containers_.emplace(c->id, std::move(c));
  return OkStatus();
}

Container* Containers::Find(const std::string& id) {
  auto it = containers_.find(id);
  return it == containers_.end() ? nullptr : it->second.get();
}

Status Containers::Remove(const std::string& id) {
  auto it = containers_.find(id);
  if (it == containers_.end()) return NotFound("no container " + id);
  Container& c = *it->second;
  c.cgroup.Remove();
  for (auto s = c.storages.rbegin(); s != c.storages.rend(); ++s) UnmountStorage(*s);
  containers_.erase(it);
  return OkStatus();
}

}  // namespace vmf::agent
