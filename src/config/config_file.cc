#include "config/config_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "common/io.h"
#include "config/toml.h"
#include "factory/template.h"

namespace vmf {
namespace {

constexpr int64_t kMaxVcpus = 240;
constexpr int64_t kMinMemoryMib = 64;
constexpr int64_t kMaxMemoryMib = 1 << 20;  // 1 TiB
constexpr int64_t kMaxMemorySlots = 256;
constexpr int64_t kMaxTimeoutSeconds = 3600;
constexpr int64_t kMaxCacheNumber = 64;
constexpr int64_t kMaxCacheParallelism = 8;
constexpr size_t kMaxUnixSocketPath = 107;  // sizeof(sockaddr_un::sun_path) - 1

// A user-supplied string, quoted, with anything unprintable escaped, so an
// error message stays one readable line whatever the file contains.
std::string Quote(std::string_view s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

// One segment of a dotted key, quoted as TOML would if it is not bare.
std::string KeyPart(std::string_view k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  if (bare) return std::string(k);
  std::string out = "\"";
  for (unsigned char c : k) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string_view TypeName(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// Walks the parsed document, applying every known key to a Config and
// recording every problem with its position; the earliest one is reported.
class Loader {
 public:
  Loader(const std::string& origin, Config* config) : origin_(origin), c_(config) {}

  void Walk(const toml::table& root) {
    ForEach(root, "",
            {
                {"hypervisor",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) {
                     ForEach(*t, key, {{"qemu", [&](const toml::node& q, const std::string& qkey) {
                                          if (auto* qt = Table(q, qkey)) Qemu(*qt, qkey);
                                        }}});
                   }
                 }},
                {"agent",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Agent(*t, key);
                 }},
                {"factory",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Factory(*t, key);
                 }},
                {"limits",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Limits(*t, key);
                 }},
                {"metrics",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Metrics(*t, key);
                 }},
                {"security",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Security(*t, key);
                 }},
                {"runtime",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto* t = Table(n, key)) Runtime(*t, key);
                 }},
            });
  }

  // Cross-field rules and derived defaults; runs once every key was valid.
  void Finish() {
    auto& h = c_->vm.hypervisor;
    if (max_vcpus_) {
      if (h.max_vcpus < h.vcpus) {
        Error(*max_vcpus_, "hypervisor.qemu.default_maxvcpus",
              std::to_string(h.max_vcpus) + " is below hypervisor.qemu.default_vcpus (" +
                  std::to_string(h.vcpus) + ")");
      }
    } else {
      h.max_vcpus = std::max(h.max_vcpus, h.vcpus);
    }
    if (max_memory_) {
      if (h.max_memory_mib < h.memory_mib) {
        Error(*max_memory_, "hypervisor.qemu.default_maxmemory",
              std::to_string(h.max_memory_mib) + " is below hypervisor.qemu.default_memory (" +
                  std::to_string(h.memory_mib) + ")");
      }
    } else {
      h.max_memory_mib = std::max(h.max_memory_mib, h.memory_mib);
    }
    // The runtime dir moves every path derived from it that was not set.
    if (c_->factory.template_path.empty()) {
      c_->factory.template_path = DefaultTemplateRoot(c_->vm.runtime_dir);
    }
    if (c_->factory.vm_cache_endpoint.empty()) {
      c_->factory.vm_cache_endpoint = c_->vm.runtime_dir + "/daemon.sock";
    }
  }

  bool ok() const { return errors_.empty(); }

  // The first problem in file order.
  Status FirstError() const {
    auto it = std::min_element(errors_.begin(), errors_.end(), [](const Issue& a, const Issue& b) {
      return std::pair(a.line, a.column) < std::pair(b.line, b.column);
    });
    return InvalidArgument(it->text);
  }

 private:
  using Handler = std::function<void(const toml::node&, const std::string&)>;

  struct Issue {
    int64_t line;
    int64_t column;
    std::string text;
  };

  void Error(const toml::source_region& where, const std::string& key, const std::string& what) {
    std::string text = origin_;
    if (where.begin.line > 0) text += ":" + std::to_string(where.begin.line);
    text += ": " + key + ": " + what;
    errors_.push_back(
        {static_cast<int64_t>(where.begin.line), static_cast<int64_t>(where.begin.column), std::move(text)});
  }

  // Dispatches each entry of `table` to its handler; anything else is unknown.
  void ForEach(const toml::table& table, const std::string& prefix,
               const std::map<std::string, Handler, std::less<>>& handlers) {
    for (auto&& [k, node] : table) {
      std::string key = (prefix.empty() ? "" : prefix + ".") + KeyPart(k.str());
      auto h = handlers.find(k.str());
      if (h == handlers.end()) {
        // Report at the key itself; a table opened only implicitly may have
        // no key position, so fall back to the node.
        const auto& where = k.source().begin.line > 0 ? k.source() : node.source();
        Error(where, key, node.is_table() ? "unknown table" : "unknown key");
        continue;
      }
      h->second(node, key);
    }
  }

  const toml::table* Table(const toml::node& n, const std::string& key) {
    if (auto* t = n.as_table()) return t;
    Error(n.source(), key, "expected a table, got " + std::string(TypeName(n.type())));
    return nullptr;
  }

  std::optional<int64_t> Int(const toml::node& n, const std::string& key, int64_t lo, int64_t hi) {
    auto* v = n.as_integer();
    if (!v) {
      Error(n.source(), key, "expected an integer, got " + std::string(TypeName(n.type())));
      return std::nullopt;
    }
    int64_t x = v->get();
    if (x < lo || x > hi) {
      Error(n.source(), key,
            "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                std::to_string(x));
      return std::nullopt;
    }
    return x;
  }

  std::optional<bool> Bool(const toml::node& n, const std::string& key) {
    if (auto* v = n.as_boolean()) return v->get();
    Error(n.source(), key, "expected a boolean, got " + std::string(TypeName(n.type())));
    return std::nullopt;
  }

  std::optional<std::string> Str(const toml::node& n, const std::string& key) {
    auto* v = n.as_string();
    if (!v) {
      Error(n.source(), key, "expected a string, got " + std::string(TypeName(n.type())));
      return std::nullopt;
    }
    const std::string& s = v->get();
    if (s.find('\0') != std::string::npos) {
      Error(n.source(), key, "contains a NUL character");
      return std::nullopt;
    }
    return s;
  }

  // A string naming an absolute path; "" is allowed only if `empty_ok`.
  std::optional<std::string> AbsPath(const toml::node& n, const std::string& key, bool empty_ok) {
    auto s = Str(n, key);
    if (!s) return std::nullopt;
    if (s->empty() && empty_ok) return s;
    if (s->empty() || (*s)[0] != '/') {
      Error(n.source(), key, "must be an absolute path, got " + Quote(*s));
      return std::nullopt;
    }
    return s;
  }

  // An absolute path to an existing regular file.
  std::optional<std::string> ExistingFile(const toml::node& n, const std::string& key) {
    auto s = AbsPath(n, key, false);
    if (!s) return std::nullopt;
    struct stat st {};
    if (::stat(s->c_str(), &st) != 0) {
      Error(n.source(), key, Quote(*s) + ": " + std::strerror(errno));
      return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
      Error(n.source(), key, Quote(*s) + " is not a regular file");
      return std::nullopt;
    }
    return s;
  }

  void Qemu(const toml::table& t, const std::string& prefix) {
    auto& h = c_->vm.hypervisor;
    ForEach(t, prefix,
            {
                {"path",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = Str(n, key);
                   if (!s) return;
                   // A bare name is looked up in PATH (as the built-in default is);
                   // anything with a slash must be absolute.
                   if (s->empty() || (s->find('/') != std::string::npos && (*s)[0] != '/')) {
                     Error(n.source(), key, "must be an absolute path or a program name, got " + Quote(*s));
                     return;
                   }
                   h.qemu.path = *s;
                 }},
                {"kernel",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto s = ExistingFile(n, key)) h.kernel = *s;
                 }},
                {"initrd",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto s = ExistingFile(n, key)) h.initrd = *s;
                 }},
                {"machine_type",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = Str(n, key);
                   if (!s) return;
                   if (*s != "q35" && *s != "pc") {
                     Error(n.source(), key, "must be \"q35\" or \"pc\", got " + Quote(*s));
                     return;
                   }
                   h.qemu.machine = *s;
                 }},
                {"kernel_params",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = Str(n, key);
                   if (!s) return;
                   if (s->find_first_of("\r\n") != std::string::npos) {
                     Error(n.source(), key, "must not contain a line break");
                     return;
                   }
                   h.kernel_params = *s;
                 }},
                {"default_vcpus",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, kMaxVcpus)) h.vcpus = static_cast<uint32_t>(*v);
                 }},
                {"default_maxvcpus",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, kMaxVcpus)) {
                     h.max_vcpus = static_cast<uint32_t>(*v);
                     max_vcpus_ = n.source();
                   }
                 }},
                {"default_memory",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, kMinMemoryMib, kMaxMemoryMib))
                     h.memory_mib = static_cast<uint32_t>(*v);
                 }},
                {"memory_slots",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, kMaxMemorySlots))
                     h.qemu.memory_slots = static_cast<uint32_t>(*v);
                 }},
                {"disk_slots",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, 32)) h.qemu.disk_slots = static_cast<uint32_t>(*v);
                 }},
                {"default_maxmemory",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, kMinMemoryMib, kMaxMemoryMib)) {
                     h.max_memory_mib = static_cast<uint32_t>(*v);
                     max_memory_ = n.source();
                   }
                 }},
                {"accel",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = Str(n, key);
                   if (!s) return;
                   if (*s == "auto") {
                     h.qemu.accel = Accel::kAuto;
                   } else if (*s == "kvm") {
                     h.qemu.accel = Accel::kKvm;
                   } else if (*s == "tcg") {
                     h.qemu.accel = Accel::kTcg;
                   } else {
                     Error(n.source(), key, "must be \"auto\", \"kvm\" or \"tcg\", got " + Quote(*s));
                   }
                 }},
            });
  }

  void Agent(const toml::table& t, const std::string& prefix) {
    auto& a = c_->vm.agent;
    ForEach(t, prefix,
            {
                {"boot_timeout",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, kMaxTimeoutSeconds)) a.boot_timeout = std::chrono::seconds(*v);
                 }},
                {"call_timeout",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, kMaxTimeoutSeconds)) a.call_timeout = std::chrono::seconds(*v);
                 }},
                {"health_timeout",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, kMaxTimeoutSeconds))
                     a.health_timeout = std::chrono::seconds(*v);
                 }},
            });
  }

  void Factory(const toml::table& t, const std::string& prefix) {
    auto& f = c_->factory;
    ForEach(t, prefix,
            {
                {"enable_template",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Bool(n, key)) f.enable_template = *v;
                 }},
                {"template_path",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto s = AbsPath(n, key, true)) f.template_path = *s;
                 }},
                {"vm_cache_number",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, kMaxCacheNumber)) f.vm_cache_number = static_cast<int>(*v);
                 }},
                {"restore_targets",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, kMaxCacheNumber)) f.restore_targets = static_cast<int>(*v);
                 }},
                {"vm_cache_endpoint",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = AbsPath(n, key, true);
                   if (!s) return;
                   if (s->size() > kMaxUnixSocketPath) {
                     Error(n.source(), key,
                           "unix socket path is " + std::to_string(s->size()) + " bytes, at most " +
                               std::to_string(kMaxUnixSocketPath) + " allowed");
                     return;
                   }
                   f.vm_cache_endpoint = *s;
                 }},
                {"vm_cache_parallelism",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, kMaxCacheParallelism))
                     f.vm_cache_parallelism = static_cast<int>(*v);
                 }},
            });
  }

  void Security(const toml::table& t, const std::string& prefix) {
    auto& s = c_->vm.security;
    ForEach(t, prefix,
            {
                {"confine",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Bool(n, key)) s.confine = *v;
                 }},
                {"uid_first",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, 0xfffffffdLL)) s.uid_first = static_cast<uint32_t>(*v);
                 }},
                {"uid_count",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 1, 1 << 24)) s.uid_count = static_cast<uint32_t>(*v);
                 }},
                {"readonly_open_lib",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto p = AbsPath(n, key, false)) s.readonly_open_lib = *p;
                 }},
            });
  }

  void Limits(const toml::table& t, const std::string& prefix) {
    auto& l = c_->vm.limits;
    ForEach(t, prefix,
            {
                {"enabled",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Bool(n, key)) l.enabled = *v;
                 }},
                {"required",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Bool(n, key)) l.required = *v;
                 }},
                {"memory_overhead_mib",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, 0, kMaxMemoryOverheadMib))
                     l.memory_overhead_mib = static_cast<uint32_t>(*v);
                 }},
                {"pids_max",
                 [&](const toml::node& n, const std::string& key) {
                   if (auto v = Int(n, key, kMinPidsMax, kMaxPidsMax)) l.pids_max = static_cast<uint32_t>(*v);
                 }},
            });
  }

  void Metrics(const toml::table& t, const std::string& prefix) {
    ForEach(t, prefix,
            {
                {"address",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = Str(n, key);
                   if (!s) return;
                   if (std::string why = CheckHostPort(*s); !why.empty()) {
                     Error(n.source(), key, why + ", got " + Quote(*s));
                     return;
                   }
                   c_->metrics.address = *s;
                 }},
            });
  }

  void Runtime(const toml::table& t, const std::string& prefix) {
    ForEach(t, prefix,
            {
                {"dir",
                 [&](const toml::node& n, const std::string& key) {
                   auto s = AbsPath(n, key, true);
                   if (!s) return;
                   c_->vm.runtime_dir = s->empty() ? DefaultRuntimeDir() : *s;
                 }},
            });
  }

  // "" if `a` is "" or host:port (host may be [IPv6]) with port 1..65535,
  // else why not.
  static std::string CheckHostPort(const std::string& a) {
    if (a.empty()) return "";
    std::string host, port;
    if (a[0] == '[') {
      size_t close = a.find(']');
      if (close == std::string::npos || close + 1 >= a.size() || a[close + 1] != ':') {
        return "must be host:port or [ipv6]:port";
      }
      host = a.substr(1, close - 1);
      port = a.substr(close + 2);
    } else {
      size_t colon = a.rfind(':');
      if (colon == std::string::npos) return "must be host:port";
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
      if (host.find(':') != std::string::npos) return "an IPv6 host must be in brackets ([::1]:9464)";
    }
    if (host.empty()) return "host:port needs a host";
    for (unsigned char ch : host) {
      if (ch <= ' ' || ch == 0x7f || ch == '/' || ch == '[' || ch == ']')
        return "host contains an invalid character";
    }
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](unsigned char ch) { return ch >= '0' && ch <= '9'; })) {
      return "port must be a number between 1 and 65535";
    }
    int p = std::stoi(port);
    if (p < 1 || p > 65535) return "port must be between 1 and 65535";
    return "";
  }

  const std::string& origin_;
  Config* c_;
  std::vector<Issue> errors_;
  std::optional<toml::source_region> max_vcpus_;   // where default_maxvcpus was set
  std::optional<toml::source_region> max_memory_;  // where default_maxmemory was set
};

}  // namespace

Config DefaultConfig() {
  Config c;
  c.vm = DefaultVMConfig();
  c.vm.runtime_dir = DefaultRuntimeDir();
  c.factory.template_path = DefaultTemplateRoot(c.vm.runtime_dir);
  c.factory.vm_cache_endpoint = c.vm.runtime_dir + "/daemon.sock";
  return c;
}

Result<Config> ParseConfig(std::string_view toml_text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    return InvalidArgument(origin + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) + ": " +
                           std::string(e.description()));
  }

  Config config = DefaultConfig();
  // Derived paths are re-derived in Finish() unless the file sets them.
  config.factory.template_path.clear();
  config.factory.vm_cache_endpoint.clear();
  Loader loader(origin, &config);
  loader.Walk(root);
  if (!loader.ok()) return loader.FirstError();
  loader.Finish();
  if (!loader.ok()) return loader.FirstError();

  if (Status s = config.vm.Validate(); !s.ok()) return s.WithContext(origin);
  return config;
}

Result<Config> LoadConfigFile(const std::string& path) {
  auto text = ReadFile(path, kMaxConfigFileBytes);
  if (!text.ok()) {
    Status s = text.status();
    if (s.code() == Code::kNotFound) return NotFound("config file " + path + " does not exist");
    if (s.code() == Code::kResourceExhausted) {
      return InvalidArgument("config file " + path + " is larger than " +
                             std::to_string(kMaxConfigFileBytes) + " bytes");
    }
    return s.WithContext("config file");
  }
  return ParseConfig(*text, path);
}

}  // namespace vmf
