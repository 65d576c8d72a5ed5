// Templates and clones on real QEMU: clones run, are isolated from each
// other, get their own randomness, clock and name, grow by hotplug, and a bad
// template is a clear error with nothing left behind.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>

#include "common/io.h"
#include "factory/digest.h"
#include "factory/factory.h"
#include "helpers.h"

namespace vmf::testing {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<VM> Clone(const VMConfig& request = TestConfig()) {
  auto vm = CloneFromTemplate(SharedTemplate(), request, nullptr, nullptr);
  EXPECT_TRUE(vm.ok()) << vm.status().ToString();
  return vm.ok() ? std::move(vm).value() : nullptr;
}

// Checksum of a host file, computed in a chunked way without loading it whole.
std::string HostDigest(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < f.gcount(); ++i)
      h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
  }
  return std::to_string(h);
}

TEST(TemplateTest, FourClonesAtOnceAreIsolatedAndUnique) {
  const TemplateInfo& t = SharedTemplate();
  std::string mem_before = HostDigest(t.memory_path());
  std::string state_before = HostDigest(t.state_path());

  std::vector<std::future<std::unique_ptr<VM>>> futs;
  for (int i = 0; i < 4; ++i) futs.push_back(std::async(std::launch::async, [] { return Clone(); }));
  std::vector<std::unique_ptr<VM>> vms;
  for (auto& f : futs) vms.push_back(f.get());
  for (auto& vm : vms) ASSERT_TRUE(vm);

  std::set<std::string> randoms, hostnames;
  for (size_t i = 0; i < vms.size(); ++i) {
    VM& vm = *vms[i];
    // Each runs its own command; a file written in one is not in the others.
    auto w = Exec(vm, {"sh", "-c", "echo clone" + std::to_string(i) + " > /tmp/mark && cat /tmp/mark"});
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->out, "clone" + std::to_string(i) + "\n");
    auto rnd = Exec(vm, {"sh", "-c", "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"});
    ASSERT_TRUE(rnd.ok());
    EXPECT_EQ(rnd->out.size(), 64u) << rnd->out;
    randoms.insert(rnd->out);
    auto host = Exec(vm, {"hostname"});
    ASSERT_TRUE(host.ok());
    EXPECT_EQ(host->out, vm.id() + "\n");
    hostnames.insert(host->out);
    // The guest's clock was set at hand-out: within a second of the host's
    // (whole seconds) at some point during the call.
    const long before = static_cast<long>(::time(nullptr));
    auto date = Exec(vm, {"date", "+%s"});
    const long after = static_cast<long>(::time(nullptr));
    ASSERT_TRUE(date.ok());
    const long guest = std::stol(date->out);
    EXPECT_GE(guest, before - 1);
    EXPECT_LE(guest, after + 1);
  }
  EXPECT_EQ(randoms.size(), 4u) << "clones share RNG output";
  EXPECT_EQ(hostnames.size(), 4u);
  for (size_t i = 0; i < vms.size(); ++i) {
    auto r = Exec(*vms[i], {"cat", "/tmp/mark"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->out, "clone" + std::to_string(i) + "\n") << "a clone saw another clone's file";
  }
  vms.clear();
  EXPECT_EQ(HostDigest(t.memory_path()), mem_before) << "a clone modified the template's memory";
  EXPECT_EQ(HostDigest(t.state_path()), state_before);
  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
  EXPECT_EQ(CountVmDirs(), 0);
}

TEST(TemplateTest, BiggerRequestIsACloneWithHotplug) {
  VMConfig req = TestConfig();
  req.hypervisor.vcpus = 2;
  req.hypervisor.memory_mib = 512;
  auto vm = Clone(req);
  ASSERT_TRUE(vm);
  EXPECT_EQ(vm->cpus(), 2u);
  EXPECT_EQ(vm->memory_mib(), 512u);
  auto n = Exec(*vm, {"nproc"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->out, "2\n");
  auto m = Exec(*vm, {"sh", "-c", "grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"});
  ASSERT_TRUE(m.ok());
  // A 256 MiB guest of this kernel shows ~152 MiB MemTotal; 512 MiB shows ~408 MiB.
  EXPECT_GT(std::stol(m->out), 400 * 1024) << "MemTotal " << m->out;
}

TEST(TemplateTest, FactoryClonesFitsAndFallsBack) {
  SharedTemplate();
  auto f = NewTemplateFactory(TestConfig(), SharedTemplate().root);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  StepTimes steps;
  auto vm = (*f)->GetVM(TestConfig(), &steps, nullptr);
  ASSERT_TRUE(vm.ok()) << vm.status().ToString();
  bool restored = false;
  for (auto& [name, d] : steps) restored |= name == "restore + resume";
  EXPECT_TRUE(restored) << "served by a clone";
  EXPECT_EQ(vm->source, VmSource::kTemplate);
  vm->vm->Stop();

  // Another kernel command line: the template cannot serve it; cold boot.
  VMConfig other = TestConfig();
  other.hypervisor.kernel_params = "vmf.test=1";
  steps.clear();
  auto cold = (*f)->GetVM(other, &steps, nullptr);
  ASSERT_TRUE(cold.ok()) << cold.status().ToString();
  restored = false;
  for (auto& [name, d] : steps) restored |= name == "restore + resume";
  EXPECT_FALSE(restored) << "served by a cold boot";
  EXPECT_EQ(cold->source, VmSource::kColdBoot);
}

// A copy of the shared template's metadata and state with a sparse memory
// file, to be broken in one way per test. Load-time checks never map it.
class BadTemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const TemplateInfo& t = SharedTemplate();
    root_ = TestRuntimeDir() + "/bad-template";
    gen_ = root_ + "/gen-copy";
    fs::create_directories(gen_);
    fs::copy_file(t.state_path(), gen_ + "/state");
    if (t.boot_stub_bytes != 0) fs::copy_file(t.boot_stub_path(), gen_ + "/boot-stub");
    std::ofstream(gen_ + "/memory").close();
    fs::resize_file(gen_ + "/memory", t.memory_bytes);
    // The sparse memory file has a digest of its own: recorded, as init would.
    auto meta = nlohmann::json::parse(*ReadFile(t.generation + "/template.json"));
    meta["memory_sha256"] = *Sha256File(gen_ + "/memory");
    std::ofstream(gen_ + "/template.json") << meta.dump(2);
    ::chmod((gen_ + "/template.json").c_str(), 0600);
    fs::create_symlink("gen-copy", root_ + "/current");
    ASSERT_TRUE(LoadTemplate(root_).ok()) << "the copy is good before it is broken";
    fds_ = CountOpenFds();
  }
  void TearDown() override { fs::remove_all(root_); }
  // Expects GetVM to fail with `code` and a message containing `needle`,
  // without starting anything.
  void ExpectBroken(Code code, const std::string& needle) {
    auto direct = LoadTemplate(root_);
    ASSERT_FALSE(direct.ok());
    EXPECT_EQ(direct.status().code(), code) << direct.status().ToString();
    EXPECT_NE(direct.status().message().find(needle), std::string::npos) << direct.status().ToString();
    auto f = NewTemplateFactory(TestConfig(), root_);
    EXPECT_FALSE(f.ok());
    EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
    EXPECT_EQ(CountVmDirs(), 0);
    EXPECT_EQ(CountOpenFds(), fds_);
  }
  std::string root_, gen_;
  int fds_ = 0;
};

TEST_F(BadTemplateTest, MissingStateFile) {
  fs::remove(gen_ + "/state");
  // A file missing from a template is damage, not "no template".
  ExpectBroken(Code::kDataLoss, gen_ + "/state");
}

TEST_F(BadTemplateTest, MissingOrTruncatedBootStub) {
  ASSERT_NE(SharedTemplate().boot_stub_bytes, 0u) << "init of a bzImage kernel writes a boot stub";
  fs::resize_file(gen_ + "/boot-stub", 512);
  ExpectBroken(Code::kDataLoss, gen_ + "/boot-stub");
  fs::remove(gen_ + "/boot-stub");
  ExpectBroken(Code::kDataLoss, gen_ + "/boot-stub");
}

TEST_F(BadTemplateTest, MissingMemoryFile) {
  fs::remove(gen_ + "/memory");
  ExpectBroken(Code::kDataLoss, gen_ + "/memory");
}

TEST_F(BadTemplateTest, TruncatedStateFile) {
  fs::resize_file(gen_ + "/state", 1000);
  ExpectBroken(Code::kDataLoss, "truncated");
}

TEST_F(BadTemplateTest, MemoryFileOfTheWrongSize) {
  fs::resize_file(gen_ + "/memory", 128 << 20);
  ExpectBroken(Code::kDataLoss, gen_ + "/memory");
}

TEST_F(BadTemplateTest, MadeByAnotherFormatVersion) {
  std::string text;
  {
    std::ifstream in(gen_ + "/template.json");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string current = "\"format_version\": " + std::to_string(kTemplateFormatVersion);
  auto pos = text.find(current);
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, current.size(), "\"format_version\": 99");
  std::ofstream(gen_ + "/template.json") << text;
  ExpectBroken(Code::kFailedPrecondition, "format version 99");
}

TEST_F(BadTemplateTest, MadeForAnotherConfig) {
  // The metadata claims a 512 MiB VM; the files are those of a 256 MiB one.
  std::string text;
  {
    std::ifstream in(gen_ + "/template.json");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto pos = text.find("\"memory_mib\": 256");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, 17, "\"memory_mib\": 512");
  std::ofstream(gen_ + "/template.json") << text;
  ExpectBroken(Code::kDataLoss, "512 MiB");
}

TEST_F(BadTemplateTest, CorruptMetadataAndUnreadableState) {
  std::ofstream(gen_ + "/template.json") << "{ not json";
  ExpectBroken(Code::kDataLoss, gen_ + "/template.json");
}

TEST_F(BadTemplateTest, StateIsNotAFile) {
  fs::remove(gen_ + "/state");
  fs::create_directory(gen_ + "/state");
  ExpectBroken(Code::kDataLoss, "not a regular file");
}

TEST_F(BadTemplateTest, BrokenAfterTheFactoryWasMade) {
  auto f = NewTemplateFactory(TestConfig(), root_);
  ASSERT_TRUE(f.ok());
  fs::resize_file(gen_ + "/state", 10);
  auto vm = (*f)->GetVM(TestConfig(), nullptr, nullptr);
  ASSERT_FALSE(vm.ok());
  EXPECT_NE(vm.status().message().find("truncated"), std::string::npos) << vm.status().ToString();
  EXPECT_EQ(CountProcessesMentioning(TestRuntimeDir()), 0);
  EXPECT_EQ(CountVmDirs(), 0);
}

}  // namespace
}  // namespace vmf::testing
