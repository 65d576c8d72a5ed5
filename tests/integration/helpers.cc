#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/fd.h"
#include "common/log.h"
#include "common/procfs.h"
#include "vm/exec.h"

namespace vmf::testing {

namespace {
// Removes this process's runtime dirs once every test has run (the tests
// themselves check that nothing was left in them).
class RemoveRuntimeDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    for (const char* suffix : {"", "-cli", "-daemon", "-cfg", "-badkernel"}) {
      std::filesystem::remove_all(TestRuntimeDir() + suffix, ec);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const kRemoveRuntimeDirs =
    ::testing::AddGlobalTestEnvironment(new RemoveRuntimeDirs);
}  // namespace

const std::string& TestRuntimeDir() {
  static const std::string dir = [] {
    std::string d = "/tmp/vmf-it-" + std::to_string(::getpid());
    std::filesystem::remove_all(d);
    return d;
  }();
  return dir;
}

VMConfig TestConfig() {
  static bool logging = [] {
    InitLogging("warn");
    return true;
  }();
  (void)logging;
  VMConfig c = DefaultVMConfig();
  c.runtime_dir = TestRuntimeDir();
  c.agent.boot_timeout = std::chrono::seconds(120);
  return c;
}

const TemplateInfo& SharedTemplate() {
  static const TemplateInfo info = [] {
    // VMF_IT_TEMPLATE: the sanitizer builds keep theirs apart, so that runs
    // from different build dirs (other guest images) do not replace it under
    // one another.
    const char* env = std::getenv("VMF_IT_TEMPLATE");
    std::string root = env && *env ? env : "/tmp/vmf-it-template";
    UniqueFd lock(::open((root + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ::flock(lock.get(), LOCK_EX);
    VMConfig c = TestConfig();
    auto t = LoadTemplate(root);
    struct stat initrd {};
    ::stat(c.hypervisor.initrd.c_str(), &initrd);
    if (!t.ok() || !TemplateMismatch(*t, c).ok() || t->created_unix < initrd.st_mtime ||
        t->hypervisor.vcpus != c.hypervisor.vcpus || t->hypervisor.memory_mib != c.hypervisor.memory_mib) {
      TemplateOptions options;
      options.force = true;
      options.mount_tmpfs = false;
      t = CreateTemplate(c, root, options);
    }
    if (!t.ok()) {
      std::fprintf(stderr, "cannot make the shared template: %s\n", t.status().ToString().c_str());
      std::abort();
    }
    return *t;
  }();
  return info;
}

Result<ExecResult> Exec(VM& vm, const std::vector<std::string>& args, const std::string& stdin_data) {
  CollectOptions o;
  o.stdin_data = stdin_data;
  auto r = ExecAndCollect(vm.agent(), args, o);
  if (!r.ok()) return vm.WithCauses(r.status());  // as the CLI does: say which process died
  return ExecResult{r->exit_code, std::move(r->out), std::move(r->err)};
}

int CountProcessesMentioning(const std::string& needle) {
  // Any user's: a confined VM may run under a uid of its own.
  int count = 0;
  for (const ProcEntry& p : ListProcesses()) {
    // A zombie has no command line: it is gone for our purposes.
    for (const std::string& arg : ProcessArgv(p.pid)) {
      if (arg.find(needle) != std::string::npos) {
        ++count;
        break;
      }
    }
  }
  return count;
}

int CountVmDirs() { return CountVmDirsIn(TestRuntimeDir()); }

int CountVmDirsIn(const std::string& runtime_dir) {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(runtime_dir + "/vm", ec);
       !ec && it != std::filesystem::directory_iterator(); ++it) {
    ++n;
  }
  return n;
}

std::string WriteShimConfig(const std::string& runtime_dir, const std::string& name,
                            const std::string& agent) {
  const TemplateInfo& t = SharedTemplate();
  VMConfig c = TestConfig();
  std::filesystem::create_directories(runtime_dir);
  const std::string path = runtime_dir + "/" + name;
  std::ofstream(path) << "[hypervisor.qemu]\n"
                      << "kernel = \"" << c.hypervisor.kernel << "\"\n"
                      << "initrd = \"" << c.hypervisor.initrd << "\"\n"
                      << "[factory]\n"
                      << "template_path = \"" << t.root << "\"\n"
                      << "vm_cache_endpoint = \"" << runtime_dir << "/no-daemon.sock\"\n"
                      << "[runtime]\n"
                      << "dir = \"" << runtime_dir << "\"\n"
                      << "[agent]\n"
                      << agent << "\n";
  return path;
}

int CountOpenFds() {
  int n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd");
       it != std::filesystem::directory_iterator(); ++it) {
    ++n;
  }
  return n;
}

}  // namespace vmf::testing
