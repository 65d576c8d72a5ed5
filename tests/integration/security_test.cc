// Security properties on real VMs: runtime files are private, handles and
// ids from other processes cannot make us touch anything outside a VM's own
// dir, and clones handed out never share randomness.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <set>
#include <sstream>

#include "factory/factory.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

mode_t ModeOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode;
}

TEST(SecurityTest, RuntimeDirsAre0700AndSocketsAndLogs0600) {
  auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  for (const std::string& d : {TestRuntimeDir() + "/vm", (*vm)->dir()}) {
    EXPECT_EQ(ModeOf(d) & 07777, 0700u) << d;
  }
  int sockets = 0;
  for (const auto& e : fs::directory_iterator((*vm)->dir())) {
    mode_t m = ModeOf(e.path());
    if (S_ISSOCK(m)) ++sockets;
    EXPECT_EQ(m & 077, 0u) << e.path() << " is open to group or others (mode " << std::oct << (m & 07777)
                           << ")";
  }
  EXPECT_GE(sockets, 3) << "QMP, agent and proxy sockets";
  // The shared template too.
  const TemplateInfo& t = SharedTemplate();
  EXPECT_EQ(ModeOf(t.root) & 07777, 0700u);
  EXPECT_EQ(ModeOf(t.generation + "/template.json") & 077, 0u);
  // The RAM and state files are read-only for everyone (clones map them in
  // their jail); the 0700 root keeps them from anyone else on the host.
  for (const auto& f : {t.memory_path(), t.state_path()}) {
    EXPECT_EQ(ModeOf(f) & 07777, 0444u) << f;
  }
}

// A handle names a dir that Stop() removes and pids that it kills: a
// forged or stale one must be refused before anything is touched.
TEST(SecurityTest, AttachRefusesHandlesThatPointOutsideAVm) {
  const std::string id = "0123456789abcdef0123456789abcdef";
  const std::string victim = TestRuntimeDir() + "-victim";
  fs::create_directories(victim + "/vm/" + id);
  ::chmod((victim + "/vm/" + id).c_str(), 0700);
  std::ofstream(victim + "/precious") << "keep me";
  std::ofstream(victim + "/vm/" + id + "/precious") << "keep me";
  // A process that is not a VM of ours: a sleeping child.
  pid_t bystander = ::fork();
  if (bystander == 0) {
    ::pause();
    ::_exit(0);
  }

  struct Case {
    std::string why;
    VMHandle h;
  };
  auto base = [&] {
    VMHandle h;
    h.id = id;
    h.runtime_dir = victim + "/vm/" + id;
    h.vmm_pid = bystander;
    h.proxy_pid = bystander;
    h.cpus = 1;
    h.memory_mib = 256;
    return h;
  };
  std::vector<Case> cases;
  cases.push_back({"id with a path", base()});
  cases.back().h.id = "../" + id;
  cases.push_back({"dir that climbs out", base()});
  cases.back().h.runtime_dir = victim + "/vm/" + id + "/../..";
  cases.push_back({"dir not named after the id", base()});
  cases.back().h.runtime_dir = victim;
  cases.push_back({"relative dir", base()});
  cases.back().h.runtime_dir = "vm/" + id;
  cases.push_back({"pids that are not the VM's", base()});
  cases.push_back({"pid 1", base()});
  cases.back().h.vmm_pid = 1;
  cases.back().h.proxy_pid = 1;
  for (const auto& c : cases) {
    auto vm = VM::Attach(c.h, TestConfig());
    EXPECT_FALSE(vm.ok()) << c.why;
    if (!vm.ok()) std::cerr << "[ refused  ] " << c.why << ": " << vm.status().ToString() << "\n";
  }
  // A link in place of the dir is refused too.
  fs::remove_all(victim + "/vm/" + id);
  fs::create_directory_symlink(victim, victim + "/vm/" + id);
  auto linked = VM::Attach(base(), TestConfig());
  EXPECT_FALSE(linked.ok());
  EXPECT_EQ(::kill(bystander, 0), 0) << "a bystander process was killed";
  EXPECT_TRUE(fs::exists(victim + "/precious")) << "a file outside any VM was removed";
  ::kill(bystander, SIGKILL);
  ::waitpid(bystander, nullptr, 0);
  fs::remove_all(victim);
}

TEST(SecurityTest, SandboxIdsCannotEscapeTheRuntimeDir) {
  auto vm = CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  const std::vector<std::string> bad_ids = {
      "..",  "../x", "a/b", "/etc", ".hidden", "-rf", "", std::string(65, 'a'), std::string("a\0b", 3),
      "a b", "a\nb"};
  for (const std::string& bad : bad_ids) {
    Status st = (*vm)->AssignSandbox(bad);
    EXPECT_FALSE(st.ok()) << "sandbox id '" << bad << "' was accepted";
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  }
  EXPECT_FALSE(fs::exists(TestRuntimeDir() + "/x"));
  EXPECT_FALSE(fs::exists(TestRuntimeDir() + "/sandbox/a"));
}

// Clones restore the same RAM, CRNG state included. Each is reseeded from
// the host before it is handed out: no two may produce the same bytes.
// Eight clones of one template, all running at once, are eight machines:
// none shares randomness, a VM generation id, a boot id, a machine-id or a
// name with another.
TEST(SecurityTest, EightClonesAtOnceAreDistinctMachines) {
  std::vector<std::future<Result<std::unique_ptr<VM>>>> futs;
  for (int i = 0; i < 8; ++i) {
    futs.push_back(std::async(std::launch::async, [] {
      return CloneFromTemplate(SharedTemplate(), TestConfig(), nullptr, nullptr);
    }));
  }
  std::vector<std::unique_ptr<VM>> vms;
  for (auto& f : futs) {
    auto vm = f.get();
    ASSERT_TRUE(vm.ok()) << vm.status().ToString();
    vms.push_back(std::move(*vm));
  }
  std::set<std::string> urandom, uuids, hostnames, boot_ids, machine_ids, generation_ids;
  const std::regex guid("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
  for (auto& vm : vms) {
    // The very first bytes after hand-out.
    auto r =
        Exec(*vm, {"sh", "-c",
                   "head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo;"
                   " cat /proc/sys/kernel/random/uuid; hostname; cat /proc/sys/kernel/random/boot_id;"
                   " cat /etc/machine-id;"
                   // A kernel with the vmgenid driver reseeds on the new GUID itself.
                   " if [ -e /sys/bus/acpi/drivers/vmgenid ]; then dmesg | grep -c 'virtual machine fork';"
                   " else echo no-driver; fi"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::istringstream lines(r->out);
    std::string bytes, uuid, host, boot_id, machine_id, vmgenid_reseeds;
    std::getline(lines, bytes);
    std::getline(lines, uuid);
    std::getline(lines, host);
    std::getline(lines, boot_id);
    std::getline(lines, machine_id);
    std::getline(lines, vmgenid_reseeds);
    if (vmgenid_reseeds != "no-driver") {
      EXPECT_EQ(vmgenid_reseeds, "1") << "no vmgenid reseed: " << r->out;
    }
    EXPECT_EQ(bytes.size(), 128u) << r->out;
    EXPECT_TRUE(std::regex_match(boot_id, guid)) << r->out;
    EXPECT_EQ(machine_id.size(), 32u) << r->out;
    urandom.insert(bytes);
    uuids.insert(uuid);
    hostnames.insert(host);
    boot_ids.insert(boot_id);
    machine_ids.insert(machine_id);
    auto gen = vm->GenerationId();
    ASSERT_TRUE(gen.ok()) << gen.status().ToString();
    EXPECT_TRUE(std::regex_match(*gen, guid)) << *gen;
    generation_ids.insert(*gen);
  }
  EXPECT_EQ(urandom.size(), 8u) << "two clones read the same bytes from /dev/urandom";
  EXPECT_EQ(uuids.size(), 8u) << "two clones made the same random uuid";
  EXPECT_EQ(hostnames.size(), 8u);
  EXPECT_EQ(boot_ids.size(), 8u) << "two clones share a boot id";
  EXPECT_EQ(machine_ids.size(), 8u) << "two clones share a machine-id";
  EXPECT_EQ(generation_ids.size(), 8u) << "two clones share a VM generation id";
  vms.clear();
  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
}

}  // namespace
}  // namespace vmf::testing
