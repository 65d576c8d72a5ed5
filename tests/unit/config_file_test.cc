#include "config/config_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "factory/template.h"

namespace vmf {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream(path) << text;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// A private temp dir holding a guest kernel, an initrd and a stand-in qemu,
// so a full configuration validates without the real guest image or QEMU.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vmf-config-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    kernel_ = dir_ + "/vmlinuz";
    initrd_ = dir_ + "/initramfs.cpio";
    qemu_ = dir_ + "/qemu-system-x86_64";
    WriteText(kernel_, "not really a kernel");
    WriteText(initrd_, "not really an initrd");
    WriteText(qemu_, "#!/bin/sh\nexit 0\n", 0755);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The smallest file that passes VMConfig::Validate() with our stand-ins.
  std::string BaseQemu() const {
    return "[hypervisor.qemu]\n"
           "path = \"" +
           qemu_ +
           "\"\n"
           "kernel = \"" +
           kernel_ +
           "\"\n"
           "initrd = \"" +
           initrd_ +
           "\"\n"
           "accel = \"tcg\"\n";
  }

  // Validate() also wants the vmfactory-proxy binary, which the file cannot
  // name; it exists once the project is built.
  static bool ProxyBuilt() { return ::access(DefaultVMConfig().proxy.path.c_str(), X_OK) == 0; }

  std::string dir_, kernel_, initrd_, qemu_;
};

#define REQUIRE_PROXY() \
  if (!ProxyBuilt()) GTEST_SKIP() << "vmfactory-proxy not built at " << DefaultVMConfig().proxy.path

TEST_F(ConfigFileTest, DefaultsNeedNoFile) {
  Config c = DefaultConfig();
  VMConfig vm = DefaultVMConfig();
  EXPECT_EQ(c.vm.hypervisor.kernel, vm.hypervisor.kernel);
  EXPECT_EQ(c.vm.hypervisor.initrd, vm.hypervisor.initrd);
  EXPECT_EQ(c.vm.hypervisor.vcpus, 1u);
  EXPECT_EQ(c.vm.hypervisor.max_vcpus, 4u);
  EXPECT_EQ(c.vm.hypervisor.memory_mib, 256u);
  EXPECT_EQ(c.vm.hypervisor.max_memory_mib, 2048u);
  EXPECT_EQ(c.vm.runtime_dir, DefaultRuntimeDir());
  EXPECT_TRUE(c.factory.enable_template);
  EXPECT_EQ(c.factory.template_path, DefaultTemplateRoot(DefaultRuntimeDir()));
  EXPECT_EQ(c.factory.vm_cache_endpoint, DefaultRuntimeDir() + "/daemon.sock");
  EXPECT_EQ(c.factory.vm_cache_number, 0);
  EXPECT_EQ(c.factory.vm_cache_parallelism, 1);
  EXPECT_EQ(c.metrics.address, "127.0.0.1:9464");
}

TEST_F(ConfigFileTest, FullValidFile) {
  REQUIRE_PROXY();
  std::string text =
      "# vmfactory configuration\n"
      "[hypervisor.qemu]\n"
      "path = \"" +
      qemu_ +
      "\"\n"
      "kernel = \"" +
      kernel_ +
      "\"\n"
      "initrd = \"" +
      initrd_ +
      "\"\n"
      "machine_type = \"pc\"\n"
      "kernel_params = \"quiet loglevel=3\"\n"
      "default_vcpus = 2\n"
      "default_maxvcpus = 8\n"
      "default_memory = 512\n"
      "memory_slots = 8\n"
      "default_maxmemory = 4096\n"
      "accel = \"tcg\"\n"
      "\n"
      "[agent]\n"
      "boot_timeout = 120\n"
      "call_timeout = 10\n"
      "health_timeout = 0\n"
      "\n"
      "[factory]\n"
      "enable_template = false\n"
      "template_path = \"/srv/vmf/template\"\n"
      "vm_cache_number = 3\n"
      "vm_cache_endpoint = \"/srv/vmf/daemon.sock\"\n"
      "vm_cache_parallelism = 2\n"
      "restore_targets = 2\n"
      "\n"
      "[limits]\n"
      "enabled = false\n"
      "required = true\n"
      "memory_overhead_mib = 64\n"
      "pids_max = 100\n"
      "\n"
      "[metrics]\n"
      "address = \"0.0.0.0:9100\"\n"
      "\n"
      "[runtime]\n"
      "dir = \"/srv/vmf\"\n";
  std::string path = dir_ + "/config.toml";
  WriteText(path, text);
  auto r = LoadConfigFile(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Config& c = *r;
  const auto& h = c.vm.hypervisor;
  EXPECT_EQ(h.qemu.path, qemu_);
  EXPECT_EQ(h.kernel, kernel_);
  EXPECT_EQ(h.initrd, initrd_);
  EXPECT_EQ(h.qemu.machine, "pc");
  EXPECT_EQ(h.kernel_params, "quiet loglevel=3");
  EXPECT_EQ(h.vcpus, 2u);
  EXPECT_EQ(h.max_vcpus, 8u);
  EXPECT_EQ(h.memory_mib, 512u);
  EXPECT_EQ(h.qemu.memory_slots, 8u);
  EXPECT_EQ(h.max_memory_mib, 4096u);
  EXPECT_EQ(h.qemu.accel, Accel::kTcg);
  EXPECT_EQ(c.vm.agent.boot_timeout, std::chrono::seconds(120));
  EXPECT_EQ(c.vm.agent.call_timeout, std::chrono::seconds(10));
  EXPECT_EQ(c.vm.agent.health_timeout, std::chrono::seconds(0));
  EXPECT_FALSE(c.factory.enable_template);
  EXPECT_EQ(c.factory.template_path, "/srv/vmf/template");
  EXPECT_EQ(c.factory.vm_cache_number, 3);
  EXPECT_EQ(c.factory.vm_cache_endpoint, "/srv/vmf/daemon.sock");
  EXPECT_EQ(c.factory.vm_cache_parallelism, 2);
  EXPECT_EQ(c.factory.restore_targets, 2);
  EXPECT_FALSE(c.vm.limits.enabled);
  EXPECT_TRUE(c.vm.limits.required);
  EXPECT_EQ(c.vm.limits.memory_overhead_mib, 64u);
  EXPECT_EQ(c.vm.limits.pids_max, 100u);
  EXPECT_EQ(c.metrics.address, "0.0.0.0:9100");
  EXPECT_EQ(c.vm.runtime_dir, "/srv/vmf");
}

TEST_F(ConfigFileTest, UnsetKeysKeepDefaults) {
  REQUIRE_PROXY();
  auto r = ParseConfig(BaseQemu(), "config.toml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Config d = DefaultConfig();
  EXPECT_EQ(r->vm.hypervisor.vcpus, d.vm.hypervisor.vcpus);
  EXPECT_EQ(r->vm.hypervisor.memory_mib, d.vm.hypervisor.memory_mib);
  EXPECT_EQ(r->vm.agent.boot_timeout, d.vm.agent.boot_timeout);
  EXPECT_EQ(r->factory.template_path, d.factory.template_path);
  EXPECT_EQ(r->factory.vm_cache_endpoint, d.factory.vm_cache_endpoint);
  EXPECT_EQ(r->metrics.address, d.metrics.address);
  EXPECT_TRUE(r->vm.limits.enabled);
  EXPECT_FALSE(r->vm.limits.required);
  EXPECT_EQ(r->vm.limits.memory_overhead_mib, 256u);
  EXPECT_EQ(r->vm.limits.pids_max, 256u);
}

TEST_F(ConfigFileTest, RuntimeDirMovesDerivedPathsUnlessSet) {
  REQUIRE_PROXY();
  auto r = ParseConfig(BaseQemu() + "[runtime]\ndir = \"/srv/rt\"\n", "config.toml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->vm.runtime_dir, "/srv/rt");
  EXPECT_EQ(r->factory.template_path, DefaultTemplateRoot("/srv/rt"));
  EXPECT_EQ(r->factory.vm_cache_endpoint, "/srv/rt/daemon.sock");

  r = ParseConfig(BaseQemu() + "[factory]\ntemplate_path = \"/t\"\n[runtime]\ndir = \"/srv/rt\"\n",
                  "config.toml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->factory.template_path, "/t");
  EXPECT_EQ(r->factory.vm_cache_endpoint, "/srv/rt/daemon.sock");
}

TEST_F(ConfigFileTest, MaxSizesFollowBaseSizesWhenUnset) {
  REQUIRE_PROXY();
  auto r = ParseConfig(BaseQemu() + "default_vcpus = 16\ndefault_memory = 8192\n", "config.toml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->vm.hypervisor.max_vcpus, 16u);
  EXPECT_EQ(r->vm.hypervisor.max_memory_mib, 8192u);
}

TEST_F(ConfigFileTest, GoodMetricsAddresses) {
  REQUIRE_PROXY();
  for (std::string a : {"", "localhost:1", "10.0.0.1:65535", "[::1]:9464"}) {
    auto r = ParseConfig(BaseQemu() + "[metrics]\naddress = \"" + a + "\"\n", "config.toml");
    ASSERT_TRUE(r.ok()) << a << ": " << r.status().ToString();
    EXPECT_EQ(r->metrics.address, a);
  }
}

TEST_F(ConfigFileTest, UnknownKeyNamedWithLine) {
  auto r = ParseConfig(BaseQemu() + "kernal = \"/x\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "config.toml:6: hypervisor.qemu.kernal: unknown key");
}

TEST_F(ConfigFileTest, UnknownTopLevelKey) {
  auto r = ParseConfig("debug = true\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "config.toml:1: debug: unknown key");
}

TEST_F(ConfigFileTest, UnknownTableNamedWithLine) {
  auto r =
      ParseConfig("[agent]\nboot_timeout = 5\n\n[hypervisor.firecracker]\npath = \"/x\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), StartsWith("config.toml:4: hypervisor.firecracker: unknown table"));

  r = ParseConfig("[netwrok]\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "config.toml:1: netwrok: unknown table");
}

TEST_F(ConfigFileTest, TooManyRestoreTargetsNamed) {
  auto r = ParseConfig(BaseQemu() + "\n[factory]\nrestore_targets = 65\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "config.toml:8: factory.restore_targets: must be between 0 and 64, got 65");
}

TEST_F(ConfigFileTest, NegativeCacheSizeNamed) {
  auto r = ParseConfig(BaseQemu() + "\n[factory]\nvm_cache_number = -1\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "config.toml:8: factory.vm_cache_number: must be between 0 and 64, got -1");
}

TEST_F(ConfigFileTest, OtherRanges) {
  struct Case {
    std::string text, want;
  };
  for (const Case& c : std::vector<Case>{
           {"[hypervisor.qemu]\ndefault_vcpus = 0\n",
            "hypervisor.qemu.default_vcpus: must be between 1 and 240, got 0"},
           {"[hypervisor.qemu]\ndefault_memory = 32\n",
            "hypervisor.qemu.default_memory: must be between 64 and 1048576"},
           {"[hypervisor.qemu]\nmemory_slots = 257\n",
            "hypervisor.qemu.memory_slots: must be between 0 and 256"},
           {"[hypervisor.qemu]\nmachine_type = \"virt\"\n",
            "hypervisor.qemu.machine_type: must be \"q35\" or \"pc\", got 'virt'"},
           {"[hypervisor.qemu]\nkernel = \"vmlinuz\"\n",
            "hypervisor.qemu.kernel: must be an absolute path, got 'vmlinuz'"},
           {"[agent]\nboot_timeout = 0\n", "agent.boot_timeout: must be between 1 and 3600, got 0"},
           {"[agent]\ncall_timeout = 3601\n", "agent.call_timeout: must be between 1 and 3600, got 3601"},
           {"[agent]\nhealth_timeout = -1\n", "agent.health_timeout: must be between 0 and 3600, got -1"},
           {"[factory]\nvm_cache_parallelism = 9\n",
            "factory.vm_cache_parallelism: must be between 1 and 8, got 9"},
           {"[factory]\ntemplate_path = \"rel/t\"\n", "factory.template_path: must be an absolute path"},
           {"[factory]\nvm_cache_endpoint = \"d.sock\"\n",
            "factory.vm_cache_endpoint: must be an absolute path"},
           {"[runtime]\ndir = \"run\"\n", "runtime.dir: must be an absolute path"},
           {"[limits]\npids_max = 8\n", "limits.pids_max: must be between 16 and 4194304, got 8"},
           {"[limits]\nmemory_overhead_mib = -1\n",
            "limits.memory_overhead_mib: must be between 0 and 1048576, got -1"},
       }) {
    auto r = ParseConfig(c.text, "config.toml");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(r.status().message(), StartsWith("config.toml:2: " + c.want)) << c.text;
  }
}

TEST_F(ConfigFileTest, WrongTypeNamed) {
  auto r = ParseConfig("[hypervisor.qemu]\ndefault_vcpus = \"2\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "config.toml:2: hypervisor.qemu.default_vcpus: expected an integer, got a string");

  r = ParseConfig("[factory]\nenable_template = 1\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "config.toml:2: factory.enable_template: expected a boolean, got an integer");

  r = ParseConfig("[hypervisor.qemu]\ndefault_memory = 512.0\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("expected an integer, got a floating-point number"));

  r = ParseConfig("agent = 5\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "config.toml:1: agent: expected a table, got an integer");
}

TEST_F(ConfigFileTest, SyntaxErrorReportsLine) {
  auto r = ParseConfig("[agent]\nboot_timeout = 5\ncall_timeout = = 3\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), StartsWith("config.toml:3:"));
  // Duplicate keys are a TOML error too.
  r = ParseConfig("[agent]\nboot_timeout = 5\nboot_timeout = 6\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith("config.toml:3:"));
}

TEST_F(ConfigFileTest, MissingKernelNamed) {
  std::string missing = dir_ + "/no-such-vmlinuz";
  auto r = ParseConfig("[hypervisor.qemu]\nkernel = \"" + missing + "\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), StartsWith("config.toml:2: hypervisor.qemu.kernel: '" + missing + "'"));
  EXPECT_THAT(r.status().message(), HasSubstr("No such file"));

  r = ParseConfig("[hypervisor.qemu]\ninitrd = \"" + dir_ + "\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "config.toml:2: hypervisor.qemu.initrd: '" + dir_ + "' is not a regular file");
}

TEST_F(ConfigFileTest, MaxVcpusBelowVcpus) {
  auto r = ParseConfig(BaseQemu() + "default_vcpus = 4\ndefault_maxvcpus = 2\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "config.toml:7: hypervisor.qemu.default_maxvcpus: 2 is below hypervisor.qemu.default_vcpus (4)");

  r = ParseConfig(BaseQemu() + "default_memory = 1024\ndefault_maxmemory = 512\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(),
              StartsWith("config.toml:7: hypervisor.qemu.default_maxmemory: 512 is below"));
}

TEST_F(ConfigFileTest, BadAccel) {
  auto r = ParseConfig("[hypervisor.qemu]\naccel = \"hvf\"\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "config.toml:2: hypervisor.qemu.accel: must be \"auto\", \"kvm\" or \"tcg\", got 'hvf'");
}

TEST_F(ConfigFileTest, BadMetricsAddress) {
  for (std::string a : {"9464", "localhost", ":9464", "localhost:0", "localhost:65536", "localhost:http",
                        "::1:9464", "[::1]9464", "host name:80"}) {
    auto r = ParseConfig("[metrics]\naddress = \"" + a + "\"\n", "config.toml");
    ASSERT_FALSE(r.ok()) << a;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << a;
    EXPECT_THAT(r.status().message(), StartsWith("config.toml:2: metrics.address: ")) << a;
    EXPECT_THAT(r.status().message(), HasSubstr("got '" + a + "'")) << a;
  }
}

TEST_F(ConfigFileTest, EarliestErrorInFileOrderWins) {
  // Tables are stored sorted by name; the report must still follow the file.
  auto r = ParseConfig("[runtime]\ndir = \"x\"\n[agent]\nboot_timeout = 0\n", "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith("config.toml:2: runtime.dir:"));
}

TEST_F(ConfigFileTest, ValidateErrorsNameTheFile) {
  auto r = ParseConfig("[hypervisor.qemu]\npath = \"no-such-qemu-for-vmf-test\"\nkernel = \"" + kernel_ +
                           "\"\ninitrd = \"" + initrd_ + "\"\n",
                       "config.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), StartsWith("config.toml: hypervisor.qemu.path: "));
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  std::string path = dir_ + "/absent.toml";
  auto r = LoadConfigFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

TEST_F(ConfigFileTest, LoadedFileErrorsNameThePath) {
  std::string path = dir_ + "/config.toml";
  WriteText(path, "[factory]\nvm_cache_number = 65\n");
  auto r = LoadConfigFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), path + ":2: factory.vm_cache_number: must be between 0 and 64, got 65");
}

TEST_F(ConfigFileTest, OversizedFileRefused) {
  std::string path = dir_ + "/big.toml";
  WriteText(path, std::string(kMaxConfigFileBytes + 1, '#'));
  auto r = LoadConfigFile(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace vmf
