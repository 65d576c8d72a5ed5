// The vmfactory CLI as a user runs it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/io.h"
#include "common/process.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

struct CliResult {
  int status = -1;
  std::string out;
  std::string err;
};

std::string CliRuntimeDir() { return TestRuntimeDir() + "-cli"; }

void ExpectNothingLeft() {
  EXPECT_EQ(CountProcessesMentioning(CliRuntimeDir()), 0);
  std::error_code ec;
  auto it = std::filesystem::directory_iterator(CliRuntimeDir() + "/vm", ec);
  EXPECT_TRUE(ec || it == std::filesystem::directory_iterator()) << "a VM runtime dir was left";
}

// Runs `binary` with args and VMF_RUNTIME_DIR=runtime; optionally sends
// `sig` after `after`.
CliResult RunProgram(const std::string& binary, const std::string& runtime,
                     const std::vector<std::string>& args, int sig = 0, Duration after = Duration(0),
                     Duration timeout = std::chrono::seconds(120)) {
  std::vector<std::string> argv = {binary};
  argv.insert(argv.end(), args.begin(), args.end());
  int out_pipe[2], err_pipe[2];
  EXPECT_EQ(::pipe(out_pipe), 0);
  EXPECT_EQ(::pipe(err_pipe), 0);
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]), err_r(err_pipe[0]), err_w(err_pipe[1]);
  SpawnOptions opts;
  opts.stdout_fd = out_w.get();
  opts.stderr_fd = err_w.get();
  ::setenv("VMF_RUNTIME_DIR", runtime.c_str(), 1);
  auto child = ChildProcess::Spawn(argv, opts);
  EXPECT_TRUE(child.ok()) << child.status().ToString();
  out_w.reset();
  err_w.reset();
  CliResult r;
  std::thread reader([&] {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(err_r.get(), buf, sizeof(buf))) > 0) r.err.append(buf, n);
  });
  std::thread killer([&] {
    if (sig) {
      std::this_thread::sleep_for(after);
      child->Signal(sig);
    }
  });
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out_r.get(), buf, sizeof(buf))) > 0) r.out.append(buf, n);
  killer.join();
  reader.join();
  auto st = child->Wait(Deadline(timeout));
  EXPECT_TRUE(st.ok());
  r.status = st.ok() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  return r;
}

// Runs build/bin/vmfactory with args in the CLI tests' runtime dir.
CliResult RunCli(const std::vector<std::string>& args, int sig = 0, Duration after = Duration(0),
                 Duration timeout = std::chrono::seconds(120)) {
  return RunProgram(std::string(VMF_DEFAULT_BIN_DIR) + "/vmfactory", CliRuntimeDir(), args, sig, after,
                    timeout);
}

// `make install` gives a tree that works on its own: the defaults find the
// proxy, the preload and the guest image beside the installed binary.
TEST(CliTest, AnInstalledTreeMakesATemplateAndRunsClonesOnItsOwn) {
  const std::string prefix = TestRuntimeDir() + "-prefix";
  const std::string runtime = prefix + "/run";
  std::filesystem::remove_all(prefix);
  auto install = ChildProcess::Spawn({VMF_CMAKE_COMMAND, "--install", VMF_BUILD_DIR, "--prefix", prefix});
  ASSERT_TRUE(install.ok()) << install.status().ToString();
  auto st = install->Wait(Deadline(std::chrono::seconds(120)));
  ASSERT_TRUE(st.ok() && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << "cmake --install failed";
  for (const char* f : {"/bin/vmfactory", "/bin/vmfactory-proxy", "/lib/vmfactory/libvmf-readonly-open.so",
                        "/share/vmfactory/guest/vmlinuz", "/share/vmfactory/guest/initramfs.cpio"}) {
    EXPECT_TRUE(std::filesystem::exists(prefix + f)) << prefix + f;
  }
  const std::string bin = prefix + "/bin/vmfactory";
  CliResult init = RunProgram(bin, runtime, {"init"});
  ASSERT_EQ(init.status, 0) << init.err;
  CliResult run = RunProgram(bin, runtime, {"run", "-v", "--", "echo", "installed"});
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, "installed\n");
  EXPECT_NE(run.err.find("source: template"), std::string::npos) << run.err;
  EXPECT_EQ(RunProgram(bin, runtime, {"destroy"}).status, 0);
  EXPECT_EQ(CountProcessesMentioning(runtime), 0);
  std::filesystem::remove_all(prefix);
}

// The bench's every source but the plain cold boot, one sample each: the
// template (confined and not), its restore targets and pool through the
// factory, the whole `vmfactory run` from the template, the daemon's restore
// targets and the pool, QEMU with no factory (the same
// backend, its own agent sync) and QEMU's own snapshots. Numbers are not
// checked (see docs/benchmarks.md); that each mode measures, and that
// nothing is left, is.
TEST(CliTest, BenchSmokeMeasuresEveryModeAndLeavesNothing) {
  const std::string json = CliRuntimeDir() + "-bench.json";
  auto r = RunCli(
      {"bench", "--modes", "template,restore,cache,qemu-cold,qemu-loadvm,template-unconfined,daemon-load",
       "--iterations", "1", "--concurrency", "1", "--concurrency-mem", "1", "--json", json},
      0, Duration(0), std::chrono::seconds(280));
  EXPECT_EQ(r.status, 0) << r.err;
  auto text = ReadFile(json, 16 << 20);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto results = nlohmann::json::parse(*text, nullptr, false);
  ASSERT_TRUE(results.is_object() && results.contains("modes")) << *text;
  std::vector<std::string> measured;
  for (const auto& m : results["modes"]) {
    EXPECT_FALSE(m.contains("error")) << m.dump();
    EXPECT_GT(m.value("latency_ms", nlohmann::json::object()).value("p50", 0), 0) << m.dump();
    measured.push_back(m.value("mode", ""));
  }
  EXPECT_EQ(measured, (std::vector<std::string>{"template", "restore", "cache", "qemu-cold", "qemu-loadvm",
                                                "template-unconfined"}));
  for (const auto& m : results["modes"]) {
    if (m.value("mode", "") != "restore") continue;
    EXPECT_GT(m.value("waiting_target_pss_mib", 0.0), 1.0) << "a waiting target's PSS: " << m.dump();
    for (const auto& s : m["latency_ms"].value("samples", nlohmann::json::array()))
      EXPECT_TRUE(s.value("restore_target_hit", false)) << "each sample takes a waiting target: " << s.dump();
  }
  EXPECT_NE(r.out.find("target: waiting restore target PSS"), std::string::npos) << r.out;
  // And the whole `vmfactory run -- true` from the template and the pool.
  std::vector<std::string> e2e;
  for (const auto& e : results.value("end_to_end", nlohmann::json::array())) {
    EXPECT_FALSE(e.contains("error")) << e.dump();
    EXPECT_GT(e.value("wall_ms", nlohmann::json::object()).value("p50", 0), 0) << e.dump();
    e2e.push_back(e.value("source", ""));
  }
  EXPECT_EQ(e2e, (std::vector<std::string>{"template", "restore", "cache"}));
  EXPECT_NE(r.out.find("end to end: `vmfactory run -- true`"), std::string::npos) << r.out;
  // And the daemon under 1, 2 and 4 clients at once, one VM each: a burst
  // past the pool of 2 is served, not refused.
  std::vector<int> clients;
  for (const auto& l : results.value("daemon_load", nlohmann::json::array())) {
    EXPECT_FALSE(l.contains("error")) << l.dump();
    EXPECT_EQ(l.value("vms", 0), l.value("concurrency", -1)) << l.dump();
    clients.push_back(l.value("concurrency", 0));
  }
  EXPECT_EQ(clients, (std::vector<int>{1, 2, 4}));
  std::filesystem::remove(json);
  ExpectNothingLeft();
}

TEST(CliTest, RunPrintsOutputAndExitsWithTheCommandsStatus) {
  auto r = RunCli({"run", "-v", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_NE(r.err.find("oops"), std::string::npos);
  EXPECT_NE(r.err.find("guest boot + agent ready"), std::string::npos) << "-v prints the steps: " << r.err;
  ExpectNothingLeft();
}

// `run --rootfs DIR`: the command runs as a container in a copy of DIR
// (its own root and PID namespace), from a template clone.
TEST(CliTest, RunRootfsRunsTheCommandAsAContainerInACopyOfTheTree) {
  const std::string tree = CliRuntimeDir() + "-rootfs";
  std::filesystem::create_directories(tree + "/bin");
  std::filesystem::copy_file("/bin/busybox", tree + "/bin/busybox",
                             std::filesystem::copy_options::overwrite_existing);
  for (const char* applet : {"sh", "cat", "echo", "ls"}) {
    std::error_code ec;
    std::filesystem::create_symlink("busybox", tree + "/bin/" + applet, ec);
  }
  std::ofstream(tree + "/marker") << "in the tree\n";
  const std::string tpl = SharedTemplate().root;
  auto r = RunCli({"--template-path", tpl, "run", "--rootfs", tree, "--", "sh", "-c",
                   "cat /marker; echo $$; echo new > /written; exit 4"});
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_EQ(r.out, "in the tree\n1\n") << r.err;
  EXPECT_FALSE(std::filesystem::exists(tree + "/written")) << "a write went to the host's tree";
  r = RunCli({"--template-path", tpl, "run", "--rootfs", tree, "--", "/no/such"});
  EXPECT_EQ(r.status, 127) << r.err;
  EXPECT_NE(r.err.find("/no/such"), std::string::npos) << r.err;
  std::filesystem::remove_all(tree);
  ExpectNothingLeft();
}

TEST(CliTest, MissingCommandExits127) {
  auto r = RunCli({"run", "--", "no-such-command-xyz"});
  EXPECT_EQ(r.status, 127) << r.err;
  EXPECT_NE(r.err.find("no-such-command-xyz"), std::string::npos) << r.err;
  ExpectNothingLeft();
}

TEST(CliTest, TimeoutStopsTheVm) {
  auto start = Clock::now();
  auto r = RunCli({"run", "--timeout", "3", "--", "sleep", "600"});
  EXPECT_EQ(r.status, 124) << r.err;
  EXPECT_NE(r.err.find("timed out"), std::string::npos) << r.err;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(90));
  ExpectNothingLeft();
}

TEST(CliTest, InterruptStopsTheVmAndLeavesNothing) {
  // SIGINT during boot, and SIGINT while the command runs.
  for (auto after : {std::chrono::milliseconds(800), std::chrono::milliseconds(20000)}) {
    auto r = RunCli({"run", "--", "sleep", "600"}, SIGINT, after);
    EXPECT_EQ(r.status, 128 + SIGINT) << r.err;
    ExpectNothingLeft();
  }
}

int MountsUnder(const std::string& path) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) n += line.find(" " + path + " ") != std::string::npos;
  return n;
}

TEST(CliTest, InitStatusRunFromTemplateDestroy) {
  std::string root = CliRuntimeDir() + "/tmpl";
  auto r = RunCli({"--template-path", root, "status"});
  EXPECT_NE(r.out.find("none usable"), std::string::npos) << r.out;

  r = RunCli({"--template-path", root, "init"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("saving the device state"), std::string::npos) << "init shows its steps: " << r.err;
  EXPECT_NE(r.out.find("template ready"), std::string::npos) << r.out;
  struct stat sb {};
  ASSERT_EQ(::stat(root.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0700u);
  if (::geteuid() == 0) {
    EXPECT_EQ(MountsUnder(root), 1) << "as root the template lives in its own tmpfs";
  }

  r = RunCli({"--template-path", root, "init"});
  EXPECT_NE(r.status, 0) << "init refuses to replace a template without --force";
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;

  r = RunCli({"--template-path", root, "status"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("256 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("format version " + std::to_string(kTemplateFormatVersion)), std::string::npos)
      << r.out;

  r = RunCli({"--template-path", root, "run", "-v", "--", "cat", "/proc/sys/kernel/random/uuid"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.size(), 37u) << r.out;
  EXPECT_NE(r.err.find("restore + resume"), std::string::npos) << "served by a clone: " << r.err;

  r = RunCli({"--template-path", root, "run", "-v", "--cold", "--", "hostname"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("restore + resume"), std::string::npos) << "--cold boots cold: " << r.err;
  EXPECT_TRUE(std::regex_match(r.out, std::regex("[0-9a-f]{32}\n")))
      << "a cold VM is named after its id too: " << r.out;

  r = RunCli({"--template-path", root, "init", "--force"});
  EXPECT_EQ(r.status, 0) << r.err;

  r = RunCli({"--template-path", root, "destroy"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(root));
  EXPECT_EQ(MountsUnder(root), 0);
  ExpectNothingLeft();
}

TEST(CliTest, BadArgumentsAreClearErrors) {
  auto r = RunCli({"run", "--memory", "8", "--", "true"});
  EXPECT_EQ(r.status, 125);
  EXPECT_NE(r.err.find("hypervisor.memory_mib"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vmf::testing
