#include "shim/flags.h"

#include <map>

namespace vmf::shim {

Result<ShimFlags> ParseShimFlags(const std::vector<std::string>& args) {
  ShimFlags f;
  const std::map<std::string, std::string*> values = {
      {"namespace", &f.ns}, {"address", &f.address}, {"publish-binary", &f.publish_binary},
      {"id", &f.id},        {"bundle", &f.bundle},   {"socket", &f.socket},
  };
  const std::map<std::string, bool*> bools = {{"debug", &f.debug}, {"v", &f.version}};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-') {
      if (!f.action.empty()) return InvalidArgument("unexpected argument '" + a + "' after " + f.action);
      if (a != "start" && a != "delete") return InvalidArgument("unknown action '" + a + "' (start, delete)");
      f.action = a;
      continue;
    }
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (auto b = bools.find(name); b != bools.end()) {
      *b->second = !has_value || (value != "false" && value != "0");
      continue;
    }
    auto v = values.find(name);
    if (v == values.end()) return InvalidArgument("unknown flag -" + name);
    if (!has_value) {
      if (i + 1 >= args.size()) return InvalidArgument("flag -" + name + " needs a value");
      value = args[++i];
    }
    *v->second = value;
  }
  return f;
}

std::vector<std::string> ServeArgv(const std::string& self, const ShimFlags& f) {
  std::vector<std::string> argv = {self, "-namespace", f.ns, "-id", f.id};
  if (!f.address.empty()) argv.insert(argv.end(), {"-address", f.address});
  if (!f.publish_binary.empty()) argv.insert(argv.end(), {"-publish-binary", f.publish_binary});
  if (!f.socket.empty()) argv.insert(argv.end(), {"-socket", f.socket});
  if (f.debug) argv.emplace_back("-debug");
  return argv;
}

}  // namespace vmf::shim
