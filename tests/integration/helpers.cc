#include "helpers.h"

#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
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
    if (!t.ok() || !TemplateMismatch(*t, c).empty() || t->created_unix < initrd.st_mtime ||
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

namespace {
Result<ExecResult> ExecUndiagnosed(VM& vm, const std::vector<std::string>& args, const std::string& stdin_data) {
  static std::atomic<int> seq{0};
  std::string id = "t" + std::to_string(++seq);
  ExecSpec spec;
  spec.exec_id = id;
  spec.args = args;
  VMF_RETURN_IF_ERROR(vm.agent().ExecProcess(spec));
  ExecResult r;
  Deadline deadline(std::chrono::seconds(120));
  Status out_st, err_st;
  auto pump = [&](bool is_err, std::string* dst, Status* st) {
    for (;;) {
      auto d = is_err ? vm.agent().ReadStderr(id, deadline) : vm.agent().ReadStdout(id, deadline);
      if (!d.ok()) {
        *st = d.status();
        return;
      }
      if (d->empty()) return;
      dst->append(*d);
    }
  };
  std::thread out([&] { pump(false, &r.out, &out_st); });
  std::thread err([&] { pump(true, &r.err, &err_st); });
  Status in_st;
  size_t off = 0;
  while (off < stdin_data.size() && in_st.ok()) {
    auto n = vm.agent().WriteStdin(id, stdin_data.substr(off, 256 * 1024));
    if (!n.ok()) {
      in_st = n.status();
    } else {
      off += *n;
      if (*n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (in_st.ok()) in_st = vm.agent().CloseStdin(id);
  auto code = vm.agent().WaitProcess(id, deadline);
  out.join();
  err.join();
  VMF_RETURN_IF_ERROR(in_st);
  VMF_RETURN_IF_ERROR(out_st);
  VMF_RETURN_IF_ERROR(err_st);
  if (!code.ok()) return code.status();
  r.exit_code = *code;
  return r;
}
}  // namespace

Result<ExecResult> Exec(VM& vm, const std::vector<std::string>& args, const std::string& stdin_data) {
  auto r = ExecUndiagnosed(vm, args, stdin_data);
  if (!r.ok()) return vm.Diagnose(r.status());  // as the CLI does: say which process died
  return r;
}

int CountProcessesMentioning(const std::string& needle) {
  int count = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // A zombie has an empty command line: it is gone for our purposes.
    if (cmd.find(needle) != std::string::npos) ++count;
  }
  return count;
}

int CountVmDirs() {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator(TestRuntimeDir() + "/vm", ec);
       !ec && it != std::filesystem::directory_iterator(); ++it) {
    ++n;
  }
  return n;
}

int CountOpenFds() {
  int n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd"); it != std::filesystem::directory_iterator();
       ++it) {
    ++n;
  }
  return n;
}

}  // namespace vmf::testing
