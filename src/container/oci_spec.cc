#include "container/oci_spec.h"

#include <nlohmann/json.hpp>

#include "common/io.h"

namespace vmf::container {
namespace {

using json = nlohmann::json;
constexpr size_t kMaxSpecBytes = 4u << 20;

// Throws json::exception on a type mismatch; the callers turn that into
// INVALID_ARGUMENT.
void ToProcess(const json& p, grpc::Process* out) {
  out->set_terminal(p.value("terminal", false));
  if (p.contains("consoleSize")) {
    out->mutable_consolesize()->set_height(p["consoleSize"].value("height", 0u));
    out->mutable_consolesize()->set_width(p["consoleSize"].value("width", 0u));
  }
  if (p.contains("user")) {
    const json& u = p["user"];
    out->mutable_user()->set_uid(u.value("uid", 0u));
    out->mutable_user()->set_gid(u.value("gid", 0u));
    for (const auto& g : u.value("additionalGids", json::array())) out->mutable_user()->add_additionalgids(g);
    out->mutable_user()->set_username(u.value("username", ""));
  }
  for (const auto& a : p.value("args", json::array())) out->add_args(a.get<std::string>());
  for (const auto& e : p.value("env", json::array())) out->add_env(e.get<std::string>());
  out->set_cwd(p.value("cwd", "/"));
  for (const auto& r : p.value("rlimits", json::array())) {
    auto* rl = out->add_rlimits();
    rl->set_type(r.value("type", ""));
    rl->set_hard(r.value("hard", uint64_t{0}));
    rl->set_soft(r.value("soft", uint64_t{0}));
  }
  out->set_nonewprivileges(p.value("noNewPrivileges", false));
}

void ToResources(const json& r, grpc::LinuxResources* out) {
  if (r.contains("memory") && r["memory"].is_object()) {
    const json& m = r["memory"];
    out->mutable_memory()->set_limit(m.value("limit", int64_t{0}));
    out->mutable_memory()->set_reservation(m.value("reservation", int64_t{0}));
    out->mutable_memory()->set_swap(m.value("swap", int64_t{0}));
  }
  if (r.contains("cpu") && r["cpu"].is_object()) {
    const json& c = r["cpu"];
    out->mutable_cpu()->set_shares(c.value("shares", uint64_t{0}));
    out->mutable_cpu()->set_quota(c.value("quota", int64_t{0}));
    out->mutable_cpu()->set_period(c.value("period", uint64_t{0}));
  }
  if (r.contains("pids") && r["pids"].is_object())
    out->mutable_pids()->set_limit(r["pids"].value("limit", int64_t{0}));
}

template <typename Fn>
auto Guarded(const std::string& what, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const json::exception& e) {
    return InvalidArgument(what + ": " + e.what());
  }
}

}  // namespace

Result<BundleSpec> ParseBundleSpec(const std::string& text) {
  if (text.size() > kMaxSpecBytes) return InvalidArgument("config.json is over 4 MiB");
  return Guarded("config.json", [&]() -> Result<BundleSpec> {
    json j = json::parse(text);
    if (!j.is_object()) return InvalidArgument("config.json: not a JSON object");
    BundleSpec b;
    grpc::Spec& s = b.spec;
    s.set_version(j.value("ociVersion", ""));
    if (!j.contains("process") || !j["process"].is_object())
      return InvalidArgument("config.json: no process");
    ToProcess(j["process"], s.mutable_process());
    if (s.process().args_size() == 0) return InvalidArgument("config.json: process.args is empty");
    if (j.contains("root")) {
      s.mutable_root()->set_path(j["root"].value("path", "rootfs"));
      s.mutable_root()->set_readonly(j["root"].value("readonly", false));
    }
    s.set_hostname(j.value("hostname", ""));
    for (const auto& m : j.value("mounts", json::array())) {
      std::string type = m.value("type", "");
      std::vector<std::string> options;
      for (const auto& o : m.value("options", json::array())) options.push_back(o.get<std::string>());
      bool bind = type == "bind";
      for (const auto& o : options) bind = bind || o == "bind" || o == "rbind";
      if (bind) {
        b.binds.push_back(HostBind{m.value("source", ""), m.value("destination", ""), options});
        continue;
      }
      auto* out = s.add_mounts();
      out->set_destination(m.value("destination", ""));
      out->set_source(m.value("source", ""));
      out->set_type(type);
      for (const auto& o : options) out->add_options(o);
    }
    if (j.contains("hooks")) b.skipped.emplace_back("hooks");
    // (Each temporary json is named: a range-for over .items() of a
    // temporary would outlive it.)
    const json annotations = j.value("annotations", json::object());
    for (const auto& [k, v] : annotations.items()) {
      (*s.mutable_annotations())[k] = v.get<std::string>();
    }
    // Namespaces the spec joins (CRI: a pod container's /proc/PID/ns/... of
    // its sandbox): in the VM, the sandbox container's.
    std::vector<grpc::LinuxNamespace*> shared_ns;
    if (j.contains("linux") && j["linux"].is_object()) {
      const json& l = j["linux"];
      auto* ol = s.mutable_linux();
      const json sysctl = l.value("sysctl", json::object());
      for (const auto& [k, v] : sysctl.items()) (*ol->mutable_sysctl())[k] = v.get<std::string>();
      if (l.contains("resources") && l["resources"].is_object())
        ToResources(l["resources"], ol->mutable_resources());
      for (const auto& ns : l.value("namespaces", json::array())) {
        std::string type = ns.value("type", "");
        if (type == "network" || type == "cgroup" || type == "time" || type == "user") continue;
        auto* out = ol->add_namespaces();
        out->set_type(type);  // no path: the agent makes it
        if (!ns.value("path", "").empty()) shared_ns.push_back(out);
      }
      for (const auto& p : l.value("maskedPaths", json::array())) ol->add_maskedpaths(p.get<std::string>());
      for (const auto& p : l.value("readonlyPaths", json::array()))
        ol->add_readonlypaths(p.get<std::string>());
    }
    // Which pod, and how big a VM.
    const auto& ann = s.annotations();
    auto type = ann.find(kContainerTypeAnnotation);
    if (type != ann.end() && type->second == "sandbox") {
      b.kind = BundleSpec::Kind::kSandbox;
    } else if (type != ann.end() && type->second == "container") {
      b.kind = BundleSpec::Kind::kPodContainer;
      auto sid = ann.find(kSandboxIdAnnotation);
      if (sid == ann.end() || sid->second.empty()) {
        return InvalidArgument("config.json: a pod container without the " +
                               std::string(kSandboxIdAnnotation) + " annotation");
      }
      b.sandbox_id = sid->second;
      for (grpc::LinuxNamespace* ns : shared_ns) {
        if (ns->type() == "ipc" || ns->type() == "uts" || ns->type() == "pid") {
          ns->set_path(std::string(kShareNamespacePrefix) + b.sandbox_id);
        }
      }
    }
    if (s.has_linux() && s.linux().has_resources()) {
      const auto& r = s.linux().resources();
      if (r.has_memory() && r.memory().limit() > 0) {
        b.extra_memory_mib = static_cast<uint32_t>((r.memory().limit() + (1 << 20) - 1) >> 20);
      }
      if (r.has_cpu() && r.cpu().quota() > 0 && r.cpu().period() > 0) {
        b.extra_vcpus = static_cast<uint32_t>(
            (static_cast<uint64_t>(r.cpu().quota()) + r.cpu().period() - 1) / r.cpu().period());
      }
    }
    return b;
  });
}

Result<BundleSpec> LoadBundleSpec(const std::string& bundle) {
  VMF_ASSIGN_OR_RETURN(std::string text, ReadFile(bundle + "/config.json", kMaxSpecBytes + 1));
  auto b = ParseBundleSpec(text);
  if (!b.ok()) return b.status().WithContext(bundle);
  return b;
}

Result<grpc::Process> ParseProcess(const std::string& text) {
  if (text.size() > kMaxSpecBytes) return InvalidArgument("process spec is over 4 MiB");
  return Guarded("process spec", [&]() -> Result<grpc::Process> {
    json j = json::parse(text);
    if (!j.is_object()) return InvalidArgument("process spec: not a JSON object");
    grpc::Process p;
    ToProcess(j, &p);
    if (p.args_size() == 0) return InvalidArgument("process spec: args is empty");
    return p;
  });
}

Result<grpc::LinuxResources> ParseResources(const std::string& text) {
  if (text.size() > kMaxSpecBytes) return InvalidArgument("resources are over 4 MiB");
  return Guarded("resources", [&]() -> Result<grpc::LinuxResources> {
    json j = json::parse(text);
    if (!j.is_object()) return InvalidArgument("resources: not a JSON object");
    grpc::LinuxResources r;
    ToResources(j, &r);
    return r;
  });
}

}  // namespace vmf::container
