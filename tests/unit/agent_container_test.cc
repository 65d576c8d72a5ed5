// OCI containers in the agent (agent/container.h, spawn.h, storage.h,
// container_cgroup.h): the pure parts (mount options, spec preparation, ids,
// block device lookup in a fake sysfs) anywhere, and, as root, real
// containers on this host driven through AgentService: a busybox rootfs in a
// temp dir, run in new PID, mount, UTS and IPC namespaces.
//
// Host safety: every mount of a container is made by its init inside its own
// mount namespace; the tests check that none shows up in this process's
// /proc/self/mountinfo and never delete a rootfs that has one. Storages (which
// the agent mounts in its own namespace) are only mounted in a forked child
// that first made a private mount namespace of its own.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent.pb.h"
#include "container.h"
#include "log.h"
#include "storage.h"
#include "support/temp_sysfs.h"
#include "test_peer.h"

namespace vmf::agent {
namespace {

using std::chrono::milliseconds;
constexpr char kSvc[] = "grpc.AgentService";

int Code(const ::ttrpc::Response& r) { return r.has_status() ? r.status().code() : 0; }

std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The lines of this process's mountinfo that mention path.
std::vector<std::string> MountsUnder(const std::string& path) {
  std::vector<std::string> found;
  std::istringstream in(ReadText("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(in, line))
    if (line.find(path) != std::string::npos) found.push_back(line);
  return found;
}

std::string UniqueName(const char* prefix) {
  static std::atomic<int> seq{0};
  return std::string(prefix) + std::to_string(::getpid()) + "-" + std::to_string(++seq);
}

// A busybox rootfs in a temp dir of its own (unique: tests may run in
// parallel), removed at the end unless something is mounted under it.
class Rootfs {
 public:
  Rootfs() {
    char tmpl[] = "/tmp/vmf_rootfs_XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ::chmod(dir_.c_str(), 0755);
    for (const char* d : {"bin", "etc", "tmp", "proc", "dev", "sys", "root"})
      ::mkdir((dir_ + "/" + d).c_str(), 0755);
    ::chmod((dir_ + "/tmp").c_str(), 01777);
    std::filesystem::copy_file("/bin/busybox", dir_ + "/bin/busybox");
    ::chmod((dir_ + "/bin/busybox").c_str(), 0755);
    for (const char* a :
         {"sh",   "cat",  "echo", "hostname", "ls",  "id",   "sleep", "mount", "ps", "touch", "readlink",
          "grep", "stty", "tty",  "test",     "pwd", "true", "rm",    "mkdir", "wc", "dd"})
      std::filesystem::create_symlink("busybox", dir_ + "/bin/" + a);
    std::ofstream(dir_ + "/etc/marker") << "rootfs-marker\n";
    std::ofstream(dir_ + "/etc/secret") << "secret\n";
  }
  ~Rootfs() {
    if (!MountsUnder(dir_).empty()) {
      ADD_FAILURE() << "mounts left under " << dir_ << ": not removing it";
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

bool CanRunContainers() { return ::geteuid() == 0 && ::access("/bin/busybox", X_OK) == 0; }

grpc::Spec BasicSpec(const std::string& root, const std::vector<std::string>& args) {
  grpc::Spec spec;
  spec.mutable_root()->set_path(root);
  for (const std::string& a : args) spec.mutable_process()->add_args(a);
  spec.mutable_process()->add_env("PATH=/bin");
  return spec;
}

class AgentContainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogEnabled(getenv("VMF_AGENT_TEST_LOG") != nullptr);
    if (!CanRunContainers()) GTEST_SKIP() << "needs root and /bin/busybox (busybox-static)";
  }
  void TearDown() override { SetLogEnabled(true); }

  static ChannelServer::Options NoCgroups() {
    ChannelServer::Options o;
    o.service.cgroup_root = "";
    return o;
  }

  ::ttrpc::Response Create(TestPeer& peer, const std::string& cid, const std::string& eid,
                           const grpc::Spec& spec) {
    grpc::CreateContainerRequest req;
    req.set_container_id(cid);
    req.set_exec_id(eid);
    *req.mutable_oci() = spec;
    return peer.Call(kSvc, "CreateContainer", req);
  }
  ::ttrpc::Response Start(TestPeer& peer, const std::string& cid) {
    grpc::StartContainerRequest req;
    req.set_container_id(cid);
    return peer.Call(kSvc, "StartContainer", req, std::chrono::seconds(10));
  }
  ::ttrpc::Response Remove(TestPeer& peer, const std::string& cid) {
    grpc::RemoveContainerRequest req;
    req.set_container_id(cid);
    return peer.Call(kSvc, "RemoveContainer", req, std::chrono::seconds(15));
  }
  ::ttrpc::Response Exec(TestPeer& peer, const std::string& cid, const std::string& eid,
                         const std::vector<std::string>& args) {
    grpc::ExecProcessRequest req;
    req.set_container_id(cid);
    req.set_exec_id(eid);
    for (auto& a : args) req.mutable_process()->add_args(a);
    req.mutable_process()->add_env("PATH=/bin");
    return peer.Call(kSvc, "ExecProcess", req, std::chrono::seconds(10));
  }
  ::ttrpc::Response Signal(TestPeer& peer, const std::string& cid, const std::string& eid, uint32_t sig) {
    grpc::SignalProcessRequest req;
    req.set_container_id(cid);
    req.set_exec_id(eid);
    req.set_signal(sig);
    return peer.Call(kSvc, "SignalProcess", req);
  }
  // One read; data in *out; returns the status code.
  int Read(TestPeer& peer, const std::string& cid, const std::string& eid, bool err, std::string* out,
           milliseconds timeout = milliseconds(10000)) {
    grpc::ReadStreamRequest req;
    req.set_container_id(cid);
    req.set_exec_id(eid);
    ::ttrpc::Response r = peer.Call(kSvc, err ? "ReadStderr" : "ReadStdout", req, timeout);
    grpc::ReadStreamResponse resp;
    if (Code(r) == 0 && !resp.ParseFromString(r.payload())) return -3;
    *out = resp.data();
    return Code(r);
  }
  std::string ReadAll(TestPeer& peer, const std::string& cid, const std::string& eid, bool err = false) {
    std::string all, chunk;
    while (true) {
      int code = Read(peer, cid, eid, err, &chunk);
      EXPECT_EQ(code, 0) << "reading " << cid << "/" << eid;
      if (code != 0 || chunk.empty()) return all;
      all += chunk;
    }
  }
  // Reads stdout until it contains what (or EOF, or 10 s).
  std::string ReadUntil(TestPeer& peer, const std::string& cid, const std::string& eid,
                        const std::string& what) {
    std::string all, chunk;
    while (all.find(what) == std::string::npos) {
      if (Read(peer, cid, eid, false, &chunk) != 0 || chunk.empty()) break;
      all += chunk;
    }
    return all;
  }
  int Wait(TestPeer& peer, const std::string& cid, const std::string& eid) {
    grpc::WaitProcessRequest req;
    req.set_container_id(cid);
    req.set_exec_id(eid);
    ::ttrpc::Response r = peer.Call(kSvc, "WaitProcess", req, std::chrono::seconds(15));
    EXPECT_EQ(Code(r), 0) << r.status().message();
    grpc::WaitProcessResponse resp;
    EXPECT_TRUE(resp.ParseFromString(r.payload()));
    return resp.status();
  }
};

// ---------------------------------------------------------------- pure parts

TEST(AgentContainerPureTest, MountOptionsBecomeFlagsAndData) {
  MountOptions o =
      ParseMountOptions({"ro", "nosuid", "noatime", "mode=0755", "size=10m", "rbind", "rprivate"});
  EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_RDONLY | MS_NOSUID | MS_NOATIME));
  EXPECT_EQ(o.data, "mode=0755,size=10m");
  EXPECT_TRUE(o.bind);
  EXPECT_TRUE(o.recursive);
  EXPECT_EQ(o.propagation, static_cast<unsigned long>(MS_PRIVATE | MS_REC));
  o = ParseMountOptions({"ro", "rw", "bind", "defaults"});
  EXPECT_EQ(o.flags, 0u);
  EXPECT_TRUE(o.bind);
  EXPECT_FALSE(o.recursive);
  EXPECT_EQ(o.data, "");
}

TEST(AgentContainerPureTest, IdsFollowTheHostRule) {
  EXPECT_TRUE(ValidateContainerId("id", "c1").ok());
  EXPECT_TRUE(ValidateContainerId("id", "a.b_c-D9").ok());
  EXPECT_TRUE(ValidateContainerId("id", std::string(64, 'x')).ok());
  for (const std::string& bad : {std::string(), std::string(65, 'x'), std::string("../x"), std::string(".x"),
                                 std::string("-x"), std::string("a/b"), std::string("a b")}) {
    Status st = ValidateContainerId("container id", bad);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << bad;
  }
}

TEST(AgentContainerPureTest, SpecMountsReplaceDefaultsInPlace) {
  grpc::Spec spec = BasicSpec("/run/c1/rootfs", {"sh"});
  auto add = [&](const char* dest, const char* type, const char* src, std::vector<std::string> opts) {
    grpc::Mount* m = spec.add_mounts();
    m->set_destination(dest);
    m->set_type(type);
    m->set_source(src);
    for (auto& o : opts) m->add_options(o);
  };
  add("/data", "tmpfs", "tmpfs", {"size=1m"});
  add("/dev/", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  add("/sys/fs/cgroup", "cgroup", "cgroup", {"ro"});
  add("/etc/hosts", "bind", "/run/sandbox/hosts", {"rbind", "ro"});
  Result<ContainerInit> init = PrepareContainerInit(spec);
  ASSERT_TRUE(init.ok()) << init.status().ToString();
  ASSERT_EQ(init->mounts.size(), 8u);  // 6 defaults (one replaced), /data, /etc/hosts; cgroup skipped
  EXPECT_EQ(init->mounts[0].target, "/proc");
  EXPECT_EQ(init->mounts[1].target, "/dev");
  EXPECT_EQ(init->mounts[1].data, "mode=755,size=65536k");
  EXPECT_EQ(init->mounts[1].flags, static_cast<unsigned long>(MS_NOSUID | MS_STRICTATIME));
  EXPECT_TRUE(init->populate_dev);
  EXPECT_EQ(init->mounts[6].target, "/data");
  EXPECT_EQ(init->mounts[7].target, "/etc/hosts");
  EXPECT_EQ(init->mounts[7].kind, MountStep::Kind::kBind);
  EXPECT_TRUE(init->mounts[7].recursive);
  EXPECT_EQ(init->mounts[7].flags, static_cast<unsigned long>(MS_RDONLY));
  EXPECT_TRUE(init->mounts[4].optional);  // mqueue

  // /dev bound from the guest: no nodes made in it.
  spec.mutable_mounts(1)->set_type("bind");
  spec.mutable_mounts(1)->set_source("/dev");
  init = PrepareContainerInit(spec);
  ASSERT_TRUE(init.ok());
  EXPECT_FALSE(init->populate_dev);
}

TEST(AgentContainerPureTest, BadSpecsAreRefused) {
  EXPECT_EQ(PrepareContainerInit(BasicSpec("/r", {})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(PrepareContainerInit(BasicSpec("", {"sh"})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(PrepareContainerInit(BasicSpec("relative/root", {"sh"})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(PrepareContainerInit(BasicSpec("/", {"sh"})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(PrepareContainerInit(BasicSpec("/a/../b", {"sh"})).status().code(), Code::kInvalidArgument);
  grpc::Spec s = BasicSpec("/r", {"sh"});
  s.set_hostname(std::string(65, 'h'));
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
  s = BasicSpec("/r", {"sh"});
  s.mutable_process()->add_rlimits()->set_type("RLIMIT_BOGUS");
  Result<ContainerInit> r = PrepareContainerInit(s);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("RLIMIT_BOGUS"), std::string::npos);
  s = BasicSpec("/r", {"sh"});
  s.add_mounts()->set_destination("/x");  // no type
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
  s.mutable_mounts(0)->set_type("tmpfs");
  EXPECT_TRUE(PrepareContainerInit(s).ok());
  s.mutable_mounts(0)->set_destination("/");
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
  s.mutable_mounts(0)->set_destination("x");
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
  s.mutable_mounts(0)->set_destination("/x");
  s.mutable_mounts(0)->set_type("bind");
  s.mutable_mounts(0)->set_source("relative/source");
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
  s = BasicSpec("/r", {"sh"});
  for (int i = 0; i < 129; ++i) {
    grpc::Mount* m = s.add_mounts();
    m->set_destination("/m" + std::to_string(i));
    m->set_type("tmpfs");
  }
  EXPECT_EQ(PrepareContainerInit(s).status().code(), Code::kInvalidArgument);
}

TEST(AgentContainerPureTest, StorageChecks) {
  grpc::Storage s;
  s.set_driver("nfs");
  s.set_mount_point("/run/x");
  Status st = CheckStorage(s);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("nfs"), std::string::npos);
  s.set_driver("blk");
  s.set_fstype("ext4");
  EXPECT_EQ(CheckStorage(s).code(), Code::kInvalidArgument);  // no serial
  s.set_source("serial/../x");
  EXPECT_EQ(CheckStorage(s).code(), Code::kInvalidArgument);
  s.set_source("vmf-disk-1");
  EXPECT_TRUE(CheckStorage(s).ok());
  s.set_mount_point("relative");
  EXPECT_EQ(CheckStorage(s).code(), Code::kInvalidArgument);
  s.set_mount_point("/");
  EXPECT_EQ(CheckStorage(s).code(), Code::kInvalidArgument);
  s.set_mount_point("/run/x");
  s.set_fstype("");
  EXPECT_EQ(CheckStorage(s).code(), Code::kInvalidArgument);
  s.set_driver("local");
  EXPECT_TRUE(CheckStorage(s).ok());
}

TEST(AgentContainerPureTest, BlockDeviceFoundBySerialAndItsNodeMade) {
  if (::geteuid() != 0) GTEST_SKIP() << "mknod needs root";
  ::vmf::testing::TempSysfs sys;
  sys.Mkdir("block");
  sys.Mkdir("block/vda");
  sys.Write("block/vda/serial", "root-disk\n");
  sys.Write("block/vda/dev", "254:0\n");
  sys.Mkdir("block/loop0");  // no serial file
  ::vmf::testing::TempSysfs dev;

  StorageConfig c;
  c.sysfs_root = sys.root();
  c.dev_root = dev.root();
  c.wait = milliseconds(50);
  // The first look finds the disk not openable yet (ENXIO): it is waited for.
  int opens = 0;
  c.opens = [&](const std::string&) { return ++opens > 1; };
  Result<std::string> none = WaitBlockDevice(c, "vmf-disk-1");
  EXPECT_EQ(none.status().code(), Code::kDeadlineExceeded);
  EXPECT_NE(none.status().message().find("vmf-disk-1"), std::string::npos);

  // Hot-plugged a little later: found while waiting.
  c.wait = milliseconds(5000);
  auto t0 = std::chrono::steady_clock::now();
  std::thread plug([&] {
    std::this_thread::sleep_for(milliseconds(100));
    sys.Mkdir("block/vdb");
    sys.Write("block/vdb/dev", "254:16\n");
    sys.Write("block/vdb/serial", "vmf-disk-1\n");
  });
  Result<std::string> path = WaitBlockDevice(c, "vmf-disk-1");
  plug.join();
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(90));
  EXPECT_EQ(*path, dev.root() + "/vdb");
  struct stat st;
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  EXPECT_EQ(major(st.st_rdev), 254u);
  EXPECT_EQ(minor(st.st_rdev), 16u);
  EXPECT_EQ(opens, 2);
  EXPECT_EQ(*FindBlockDevice(sys.root(), "root-disk"), "vda");
  // An existing node is kept as it is; one of an earlier disk (another
  // device number) is made again.
  EXPECT_EQ(*WaitBlockDevice(c, "vmf-disk-1"), dev.root() + "/vdb");
  sys.Write("block/vdb/dev", "254:32\n");
  EXPECT_EQ(*WaitBlockDevice(c, "vmf-disk-1"), dev.root() + "/vdb");
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_EQ(minor(st.st_rdev), 32u);
}

TEST(AgentContainerPureTest, LocalStorageMountedAndRemovedInAPrivateNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  ::vmf::testing::TempSysfs base;
  const std::string mp = base.root() + "/a/b";
  // The mount is made in a child with a mount namespace of its own.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      ::_exit(10);
    grpc::Storage s;
    s.set_driver("local");
    s.set_mount_point(mp);
    s.add_options("size=1m");
    Result<MountedStorage> m = MountStorage(StorageConfig(), s);
    if (!m.ok()) ::_exit(11);
    if (m->created_dirs.size() != 2) ::_exit(12);
    if (MountsUnder(mp).size() != 1) ::_exit(13);
    UnmountStorage(*m);
    if (!MountsUnder(mp).empty()) ::_exit(14);
    if (::access((base.root() + "/a").c_str(), F_OK) == 0) ::_exit(15);  // the dirs it made are gone
    ::_exit(0);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_TRUE(MountsUnder(mp).empty());
}

// ---------------------------------------------------------------- the service

TEST_F(AgentContainerTest, RequestsAreChecked) {
  Rootfs rootfs;
  ChannelServer::Options opt = NoCgroups();
  opt.service.max_containers = 2;
  TestPeer peer(opt);
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"true"});
  EXPECT_EQ(Code(Create(peer, "", "e", spec)), 3);
  EXPECT_EQ(Code(Create(peer, "../x", "e", spec)), 3);
  EXPECT_EQ(Code(Create(peer, std::string(65, 'c'), "e", spec)), 3);
  EXPECT_EQ(Code(Create(peer, "c1", "", spec)), 3);
  EXPECT_EQ(Code(Create(peer, "c1", "e", BasicSpec(rootfs.dir(), {}))), 3);
  ::ttrpc::Response r = Create(peer, "c1", "e", BasicSpec(rootfs.dir() + "/missing", {"true"}));
  EXPECT_EQ(Code(r), 5) << r.status().message();

  grpc::CreateContainerRequest req;
  req.set_container_id("c1");
  req.set_exec_id("e");
  *req.mutable_oci() = spec;
  grpc::Storage* s = req.add_storages();
  s->set_driver("9p-or-whatever");
  s->set_mount_point("/run/x");
  r = peer.Call(kSvc, "CreateContainer", req);
  EXPECT_EQ(Code(r), 3);
  EXPECT_NE(r.status().message().find("9p-or-whatever"), std::string::npos) << r.status().message();

  ASSERT_EQ(Code(Create(peer, "c1", "e", spec)), 0);
  EXPECT_EQ(Code(Create(peer, "c1", "e", spec)), 6);
  ASSERT_EQ(Code(Create(peer, "c2", "e", spec)), 0);
  EXPECT_EQ(Code(Create(peer, "c3", "e", spec)), 8);  // max_containers
  EXPECT_EQ(peer.service().container_count(), 2u);

  // Created, not started: nothing to exec into or wait for.
  EXPECT_EQ(Code(Exec(peer, "c1", "x", {"true"})), 9);
  grpc::WaitProcessRequest w;
  w.set_container_id("c1");
  w.set_exec_id("e");
  EXPECT_EQ(Code(peer.Call(kSvc, "WaitProcess", w)), 5);
  EXPECT_EQ(Code(Start(peer, "nope")), 5);
  EXPECT_EQ(Code(Remove(peer, "nope")), 5);
  grpc::StatsContainerRequest stats;
  stats.set_container_id("nope");
  EXPECT_EQ(Code(peer.Call(kSvc, "StatsContainer", stats)), 5);
  stats.set_container_id("c1");
  EXPECT_EQ(Code(peer.Call(kSvc, "StatsContainer", stats)), 14);  // no cgroups in this test
  grpc::PauseContainerRequest pause;
  pause.set_container_id("c1");
  EXPECT_EQ(Code(peer.Call(kSvc, "PauseContainer", pause)), 14);

  EXPECT_EQ(Code(Remove(peer, "c1")), 0);
  EXPECT_EQ(Code(Remove(peer, "c1")), 5);
  EXPECT_EQ(Code(Remove(peer, "c2")), 0);
  EXPECT_EQ(peer.service().container_count(), 0u);
}

TEST_F(AgentContainerTest, HostSafeModeRefusesAfterChecking) {
  Rootfs rootfs;
  ChannelServer::Options opt = NoCgroups();
  opt.service.allow_exec = false;
  TestPeer peer(opt);
  EXPECT_EQ(Code(Create(peer, "", "e", BasicSpec(rootfs.dir(), {"true"}))), 3);
  EXPECT_EQ(Code(Create(peer, "c1", "e", BasicSpec(rootfs.dir(), {"true"}))), 7);
  EXPECT_EQ(peer.service().container_count(), 0u);
}

TEST_F(AgentContainerTest, InitIsPid1WithItsHostnameRootfsArgsEnvCwdAndUser) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  grpc::Spec spec =
      BasicSpec(rootfs.dir(), {"sh", "-c",
                               "echo pid=$$; hostname; cat /etc/marker; ls /etc; pwd; id -u; id -g; "
                               "id -G; echo foo=$FOO; echo args=$0,$1",
                               "zero", "one"});
  spec.set_hostname("ctr-host");
  spec.mutable_process()->add_env("FOO=bar");
  spec.mutable_process()->set_cwd("/tmp");
  grpc::User* u = spec.mutable_process()->mutable_user();
  u->set_uid(1000);
  u->set_gid(1001);
  u->add_additionalgids(1002);
  ASSERT_EQ(Code(Create(peer, "c1", "init", spec)), 0);
  EXPECT_EQ(peer.service().process_count(), 0u);  // created: nothing runs yet
  ::ttrpc::Response r = Start(peer, "c1");
  ASSERT_EQ(Code(r), 0) << r.status().message();
  EXPECT_EQ(ReadAll(peer, "c1", "init"),
            "pid=1\nctr-host\nrootfs-marker\nmarker\nsecret\n/tmp\n1000\n1001\n1001 "
            "1002\nfoo=bar\nargs=zero,one\n");
  EXPECT_EQ(ReadAll(peer, "c1", "init", true), "");
  EXPECT_EQ(Wait(peer, "c1", "init"), 0);
  EXPECT_EQ(Code(Start(peer, "c1")), 9);  // once only
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_NE(std::string(host), "ctr-host");  // the host's is untouched
  EXPECT_TRUE(MountsUnder(rootfs.dir()).empty());
  EXPECT_EQ(Code(Remove(peer, "c1")), 0);
}

TEST_F(AgentContainerTest, ExitStatusAndMissingExecutable) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  ASSERT_EQ(Code(Create(peer, "c7", "init", BasicSpec(rootfs.dir(), {"sh", "-c", "exit 7"}))), 0);
  ASSERT_EQ(Code(Start(peer, "c7")), 0);
  EXPECT_EQ(Wait(peer, "c7", "init"), 7);

  ASSERT_EQ(Code(Create(peer, "nf", "init", BasicSpec(rootfs.dir(), {"/no/such"}))), 0);
  ::ttrpc::Response r = Start(peer, "nf");
  EXPECT_EQ(Code(r), 5);
  EXPECT_NE(r.status().message().find("exec /no/such: No such file or directory"), std::string::npos)
      << r.status().message();
  ASSERT_EQ(Code(Create(peer, "nf2", "init", BasicSpec(rootfs.dir(), {"no-such-command"}))), 0);
  r = Start(peer, "nf2");
  EXPECT_EQ(Code(r), 5);
  EXPECT_NE(r.status().message().find("exec no-such-command"), std::string::npos) << r.status().message();
  // The host's binaries are not there: /bin/busybox only is.
  ASSERT_EQ(Code(Create(peer, "nf3", "init", BasicSpec(rootfs.dir(), {"/usr/bin/env"}))), 0);
  EXPECT_EQ(Code(Start(peer, "nf3")), 5);
  EXPECT_EQ(peer.service().process_count(), 1u);  // c7's, until read
  for (const char* c : {"c7", "nf", "nf2", "nf3"}) EXPECT_EQ(Code(Remove(peer, c)), 0) << c;
  EXPECT_EQ(peer.service().process_count(), 0u);
}

TEST_F(AgentContainerTest, ExecJoinsTheContainer) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  grpc::Spec spec =
      BasicSpec(rootfs.dir(), {"sh", "-c", "echo from-init > /tmp/shared; echo ready; exec sleep 30"});
  spec.set_hostname("joined");
  ASSERT_EQ(Code(Create(peer, "cj", "init", spec)), 0);
  ASSERT_EQ(Code(Start(peer, "cj")), 0);
  ASSERT_EQ(ReadUntil(peer, "cj", "init", "ready"), "ready\n");

  ::ttrpc::Response r = Exec(peer, "cj", "e1",
                             {"sh", "-c",
                              "cat /tmp/shared; hostname; cat /etc/marker; echo $$; cat /proc/1/cmdline; "
                              "echo; pwd"});
  ASSERT_EQ(Code(r), 0) << r.status().message();
  std::string out = ReadAll(peer, "cj", "e1");
  EXPECT_EQ(Wait(peer, "cj", "e1"), 0);
  std::istringstream lines(out);
  std::string l;
  std::getline(lines, l);
  EXPECT_EQ(l, "from-init") << out;
  std::getline(lines, l);
  EXPECT_EQ(l, "joined") << out;
  std::getline(lines, l);
  EXPECT_EQ(l, "rootfs-marker") << out;
  std::getline(lines, l);
  EXPECT_GT(std::atoi(l.c_str()), 1) << out;  // a pid of the container's namespace
  EXPECT_LT(std::atoi(l.c_str()), 100) << out;
  std::getline(lines, l);
  EXPECT_EQ(l, std::string("sleep\0"
                           "30\0",
                           9))
      << out;  // its pid 1 is the init
  std::getline(lines, l);
  EXPECT_EQ(l, "/") << out;

  // An exec's error names the stage; the exec id is taken once.
  r = Exec(peer, "cj", "e2", {"/no/such"});
  EXPECT_EQ(Code(r), 5);
  EXPECT_NE(r.status().message().find("exec /no/such"), std::string::npos) << r.status().message();
  EXPECT_EQ(Code(Exec(peer, "cj", "init", {"true"})), 6);

  // The agent's own later children are in its namespaces, not the container's.
  ASSERT_EQ(Code(Exec(peer, "", "vm", {"sh", "-c", "hostname; test -e /etc/marker || echo no-marker"})), 0);
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  EXPECT_EQ(ReadAll(peer, "", "vm"), std::string(host) + "\nno-marker\n");
  EXPECT_EQ(Wait(peer, "", "vm"), 0);

  EXPECT_EQ(Code(Signal(peer, "cj", "", 9)), 0);
  EXPECT_EQ(Wait(peer, "cj", "init"), 128 + 9);
  EXPECT_EQ(Code(Exec(peer, "cj", "late", {"true"})), 9);  // stopped
  EXPECT_EQ(Code(Remove(peer, "cj")), 0);
}

// A pod: the second container joins the sandbox's IPC, UTS and PID
// namespaces ("container:ID" paths) and keeps its own root and mounts.
TEST_F(AgentContainerTest, APodContainerSharesItsSandboxsIpcUtsAndPidNamespaces) {
  Rootfs sandbox_root, app_root;
  TestPeer peer(NoCgroups());
  grpc::Spec sandbox = BasicSpec(sandbox_root.dir(), {"sh", "-c", "echo ready; exec sleep 30"});
  sandbox.set_hostname("the-pod");
  ASSERT_EQ(Code(Create(peer, "pod", "pod", sandbox)), 0);
  grpc::Spec app = BasicSpec(app_root.dir(), {"sh", "-c",
                                              "hostname; echo $$; readlink /proc/self/ns/ipc; "
                                              "readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt"});
  app.set_hostname("ignored");  // the pod's hostname rules
  for (const char* type : {"ipc", "uts", "pid"}) {
    auto* ns = app.mutable_linux()->add_namespaces();
    ns->set_type(type);
    ns->set_path("container:pod");
  }
  ASSERT_EQ(Code(Create(peer, "app", "app", app)), 0);
  // Before its sandbox runs it cannot start: there is nothing to join.
  EXPECT_EQ(Code(Start(peer, "app")), 9);
  ASSERT_EQ(Code(Start(peer, "pod")), 0);
  ASSERT_EQ(ReadUntil(peer, "pod", "pod", "ready"), "ready\n");
  ::ttrpc::Response r = Start(peer, "app");
  ASSERT_EQ(Code(r), 0) << r.status().message();
  std::string out = ReadAll(peer, "app", "app");
  EXPECT_EQ(Wait(peer, "app", "app"), 0);
  ASSERT_EQ(
      Code(Exec(peer, "pod", "probe",
                {"sh", "-c",
                 "readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt"})),
      0);
  std::string pod_ns = ReadAll(peer, "pod", "probe");
  EXPECT_EQ(Wait(peer, "pod", "probe"), 0);
  std::istringstream a(out), p(pod_ns);
  std::string host, pid, ipc, pidns, mnt, pod_ipc, pod_pidns, pod_mnt;
  std::getline(a, host);
  std::getline(a, pid);
  std::getline(a, ipc);
  std::getline(a, pidns);
  std::getline(a, mnt);
  std::getline(p, pod_ipc);
  std::getline(p, pod_pidns);
  std::getline(p, pod_mnt);
  EXPECT_EQ(host, "the-pod") << out;
  EXPECT_GT(std::atoi(pid.c_str()), 1) << out;  // not the PID namespace's init: the sandbox is
  EXPECT_EQ(ipc, pod_ipc) << out << pod_ns;
  EXPECT_EQ(pidns, pod_pidns) << out << pod_ns;
  EXPECT_NE(mnt, pod_mnt) << "each container keeps its own root: " << out << pod_ns;
  // Sharing is only for these namespaces, and only with another container.
  grpc::Spec bad = BasicSpec(app_root.dir(), {"true"});
  auto* ns = bad.mutable_linux()->add_namespaces();
  ns->set_type("mount");
  ns->set_path("container:pod");
  EXPECT_EQ(Code(Create(peer, "bad", "bad", bad)), 3);
  EXPECT_EQ(Code(Signal(peer, "pod", "", 9)), 0);
  EXPECT_EQ(Wait(peer, "pod", "pod"), 128 + 9);
  EXPECT_EQ(Code(Remove(peer, "app")), 0);
  EXPECT_EQ(Code(Remove(peer, "pod")), 0);
}

TEST_F(AgentContainerTest, SignalWithoutExecIdReachesEveryProcess) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  ASSERT_EQ(Code(Create(peer, "cs", "init", BasicSpec(rootfs.dir(), {"sleep", "30"}))), 0);
  ASSERT_EQ(Code(Start(peer, "cs")), 0);
  ASSERT_EQ(Code(Exec(peer, "cs", "e1", {"sleep", "30"})), 0);
  ASSERT_EQ(Code(Exec(peer, "cs", "e2",
                      {"sh", "-c",
                       "trap 'echo term; exit 3' TERM; echo armed; "
                       "while true; do sleep 0.05; done"})),
            0);
  ASSERT_EQ(ReadUntil(peer, "cs", "e2", "armed"), "armed\n");
  // SIGTERM: each process gets it (the init, PID 1 of its namespace, has no
  // handler and ignores it, as in any container).
  EXPECT_EQ(Code(Signal(peer, "cs", "", 15)), 0);
  EXPECT_EQ(Wait(peer, "cs", "e2"), 3);
  EXPECT_EQ(Wait(peer, "cs", "e1"), 128 + 15);
  EXPECT_EQ(Code(Signal(peer, "cs", "", 0)), 0);
  EXPECT_EQ(Code(Signal(peer, "cs", "", 9)), 0);
  EXPECT_EQ(Wait(peer, "cs", "init"), 128 + 9);
  EXPECT_EQ(Code(Signal(peer, "cs", "", 99)), 3);
  EXPECT_EQ(Code(Remove(peer, "cs")), 0);
}

// A pid whose cmdline contains token, or 0.
pid_t FindProcess(const std::string& token) {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmd = ReadText(e.path().string() + "/cmdline");
    if (cmd.find(token) != std::string::npos) return std::atoi(name.c_str());
  }
  return 0;
}

TEST_F(AgentContainerTest, RemoveLeavesNoProcessAndNoMount) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  const std::string token = UniqueName("vmf-token-");
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"sh", "-c", "sleep 30 & sleep 30; : " + token});
  ASSERT_EQ(Code(Create(peer, "cr", "init", spec)), 0);
  ASSERT_EQ(Code(Start(peer, "cr")), 0);
  ASSERT_EQ(Code(Exec(peer, "cr", "e1", {"sh", "-c", "sleep 30; : " + token})), 0);
  // A read and a wait left waiting are answered by the removal.
  grpc::ReadStreamRequest rd;
  rd.set_container_id("cr");
  rd.set_exec_id("init");
  uint32_t read_id = peer.NextId();
  peer.SendRequest(read_id, kSvc, "ReadStdout", rd);
  grpc::WaitProcessRequest w;
  w.set_container_id("cr");
  w.set_exec_id("e1");
  uint32_t wait_id = peer.NextId();
  peer.SendRequest(wait_id, kSvc, "WaitProcess", w);
  peer.Drive(milliseconds(50));
  EXPECT_NE(FindProcess(token), 0);
  EXPECT_EQ(peer.service().process_count(), 2u);

  EXPECT_EQ(Code(Remove(peer, "cr")), 0);
  EXPECT_EQ(FindProcess(token), 0);
  EXPECT_EQ(peer.service().process_count(), 0u);
  EXPECT_EQ(peer.service().container_count(), 0u);
  auto rr = peer.WaitResponse(read_id);
  ASSERT_TRUE(rr);
  EXPECT_EQ(Code(*rr), 0);
  auto wr = peer.WaitResponse(wait_id);
  ASSERT_TRUE(wr);
  grpc::WaitProcessResponse ws;
  ASSERT_TRUE(ws.ParseFromString(wr->payload()));
  EXPECT_EQ(ws.status(), 128 + 9);
  EXPECT_TRUE(MountsUnder(rootfs.dir()).empty());
  EXPECT_EQ(Code(Remove(peer, "cr")), 5);
}

TEST_F(AgentContainerTest, MountsMaskedAndReadonlyPaths) {
  Rootfs rootfs;
  ::vmf::testing::TempSysfs host;  // a guest dir and file to bind
  host.Mkdir("dir");
  host.Write("dir/f", "in-host-dir\n");
  host.Write("file", "host-file\n");
  TestPeer peer(NoCgroups());
  grpc::Spec spec = BasicSpec(
      rootfs.dir(),
      {"sh", "-c",
       "cat /hostdir/f; cat /etc/hostfile; (echo x > /etc/hostfile) 2>/dev/null || echo ro-file; "
       "touch /hostdir/new && echo rw-dir; (touch /newfile) 2>/dev/null || echo ro-root; "
       "touch /data/ok && echo data-rw; cat /etc/secret; echo secret-end; ls /proc/acpi | wc -l; "
       "(echo h > /proc/sys/kernel/hostname) 2>/dev/null || echo ro-procsys; ls /dev; readlink /dev/fd; "
       "cat /proc/mounts | grep -c ' /data tmpfs '"});
  spec.mutable_process()->set_terminal(false);
  spec.mutable_root()->set_readonly(true);
  auto add = [&](const char* dest, const char* type, const std::string& src, std::vector<std::string> opts) {
    grpc::Mount* m = spec.add_mounts();
    m->set_destination(dest);
    m->set_type(type);
    m->set_source(src);
    for (auto& o : opts) m->add_options(o);
  };
  add("/data", "tmpfs", "tmpfs", {"size=1m", "mode=1777"});
  add("/hostdir", "bind", host.root() + "/dir", {"rbind", "rw"});
  add("/etc/hostfile", "bind", host.root() + "/file", {"bind", "ro"});
  add("/sys/fs/cgroup", "cgroup", "cgroup", {"ro"});
  for (const char* p : {"/etc/secret", "/proc/acpi", "/no/such/path"})
    spec.mutable_linux()->add_maskedpaths(p);
  spec.mutable_linux()->add_readonlypaths("/proc/sys");
  ASSERT_EQ(Code(Create(peer, "cm", "init", spec)), 0);
  ::ttrpc::Response r = Start(peer, "cm");
  ASSERT_EQ(Code(r), 0) << r.status().message();
  std::string out = ReadAll(peer, "cm", "init");
  std::string err = ReadAll(peer, "cm", "init", true);
  EXPECT_EQ(Wait(peer, "cm", "init"), 0) << out << err;
  EXPECT_EQ(out,
            "in-host-dir\nhost-file\nro-file\nrw-dir\nro-root\ndata-rw\nsecret-end\n0\nro-procsys\n"
            "fd\nfull\nmqueue\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n"
            "/proc/self/fd\n1\n")
      << err;
  EXPECT_EQ(ReadText(host.root() + "/file"), "host-file\n");
  EXPECT_TRUE(std::filesystem::exists(host.root() + "/dir/new"));  // the bind is the guest's dir
  EXPECT_TRUE(MountsUnder(rootfs.dir()).empty());
  EXPECT_TRUE(MountsUnder(host.root()).empty());
  EXPECT_EQ(Code(Remove(peer, "cm")), 0);
}

TEST_F(AgentContainerTest, BindSourceMissingIsNamed) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"true"});
  grpc::Mount* m = spec.add_mounts();
  m->set_destination("/x");
  m->set_type("bind");
  m->set_source("/no/such/guest/dir");
  m->add_options("rbind");
  ASSERT_EQ(Code(Create(peer, "cb", "init", spec)), 0);
  ::ttrpc::Response r = Start(peer, "cb");
  EXPECT_EQ(Code(r), 5);
  EXPECT_NE(r.status().message().find("/no/such/guest/dir"), std::string::npos) << r.status().message();
  EXPECT_EQ(Code(Remove(peer, "cb")), 0);
}

TEST_F(AgentContainerTest, RlimitsAndNoNewPrivileges) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"sh", "-c", "ulimit -n; grep NoNewPrivs /proc/self/status"});
  grpc::POSIXRlimit* l = spec.mutable_process()->add_rlimits();
  l->set_type("RLIMIT_NOFILE");
  l->set_hard(100);
  l->set_soft(90);
  spec.mutable_process()->set_nonewprivileges(true);
  ASSERT_EQ(Code(Create(peer, "cl", "init", spec)), 0);
  ASSERT_EQ(Code(Start(peer, "cl")), 0);
  EXPECT_EQ(ReadAll(peer, "cl", "init"), "90\nNoNewPrivs:\t1\n");
  EXPECT_EQ(Wait(peer, "cl", "init"), 0);
  EXPECT_EQ(Code(Remove(peer, "cl")), 0);
}

TEST_F(AgentContainerTest, TerminalAndWindowSize) {
  Rootfs rootfs;
  TestPeer peer(NoCgroups());
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"sh", "-c",
                                             "tty; stty size; test -t 0 && test -t 2 && echo tty; "
                                             "read line; echo got=$line; stty size"});
  spec.mutable_process()->set_terminal(true);
  spec.mutable_process()->mutable_consolesize()->set_height(40);
  spec.mutable_process()->mutable_consolesize()->set_width(100);
  ASSERT_EQ(Code(Create(peer, "ct", "init", spec)), 0);
  ::ttrpc::Response r = Start(peer, "ct");
  ASSERT_EQ(Code(r), 0) << r.status().message();
  std::string out = ReadUntil(peer, "ct", "init", "tty\r\n");
  EXPECT_EQ(out, "/dev/pts/0\r\n40 100\r\ntty\r\n");  // a terminal of the container's own devpts
  std::string err;
  EXPECT_EQ(Read(peer, "ct", "init", true, &err), 0);
  EXPECT_EQ(err, "");  // stderr goes to the terminal: this stream is at EOF from the start

  grpc::TtyWinResizeRequest rs;
  rs.set_container_id("ct");
  rs.set_exec_id("init");
  rs.set_row(50);
  rs.set_column(132);
  ASSERT_EQ(Code(peer.Call(kSvc, "TtyWinResize", rs)), 0);
  // An exec with a terminal gets one of the container's devpts too.
  grpc::ExecProcessRequest te;
  te.set_container_id("ct");
  te.set_exec_id("tty");
  te.mutable_process()->set_terminal(true);
  for (const char* a : {"sh", "-c", "tty; ls /dev/pts"}) te.mutable_process()->add_args(a);
  ASSERT_EQ(Code(peer.Call(kSvc, "ExecProcess", te)), 0);
  EXPECT_EQ(ReadAll(peer, "ct", "tty"), "/dev/pts/1\r\n0     1     ptmx\r\n");
  EXPECT_EQ(Wait(peer, "ct", "tty"), 0);

  grpc::WriteStreamRequest wr;
  wr.set_container_id("ct");
  wr.set_exec_id("init");
  wr.set_data("hello\n");
  ASSERT_EQ(Code(peer.Call(kSvc, "WriteStdin", wr)), 0);
  out = ReadAll(peer, "ct", "init");
  EXPECT_EQ(out, "hello\r\ngot=hello\r\n50 132\r\n");  // the terminal echoes the input
  EXPECT_EQ(Wait(peer, "ct", "init"), 0);

  rs.set_container_id("nope");
  EXPECT_EQ(Code(peer.Call(kSvc, "TtyWinResize", rs)), 5);
  EXPECT_EQ(Code(Remove(peer, "ct")), 0);

  // A process without a terminal cannot be resized.
  ASSERT_EQ(Code(Create(peer, "cp", "init", BasicSpec(rootfs.dir(), {"sleep", "30"}))), 0);
  ASSERT_EQ(Code(Start(peer, "cp")), 0);
  rs.set_container_id("cp");
  EXPECT_EQ(Code(peer.Call(kSvc, "TtyWinResize", rs)), 9);
  EXPECT_EQ(Code(Remove(peer, "cp")), 0);
}

TEST_F(AgentContainerTest, CgroupLimitsStatsUpdateAndFreezer) {
  Rootfs rootfs;
  ChannelServer::Options opt;
  opt.service.cgroup_parent = UniqueName("vmf-agent-test-");
  TestPeer peer(opt);
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"sh", "-c", "while true; do echo tick; sleep 0.05; done"});
  grpc::LinuxResources* res = spec.mutable_linux()->mutable_resources();
  res->mutable_memory()->set_limit(64 << 20);
  res->mutable_pids()->set_limit(20);
  res->mutable_cpu()->set_quota(50000);
  res->mutable_cpu()->set_period(100000);
  ::ttrpc::Response r = Create(peer, "cg", "init", spec);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  grpc::StatsContainerRequest sreq;
  sreq.set_container_id("cg");
  r = peer.Call(kSvc, "StatsContainer", sreq);
  if (Code(r) == 14) {
    EXPECT_EQ(Code(Remove(peer, "cg")), 0);
    GTEST_SKIP() << "no cgroup hierarchy here: " << r.status().message();
  }
  ASSERT_EQ(Code(Start(peer, "cg")), 0);
  ASSERT_NE(ReadUntil(peer, "cg", "init", "tick"), "");

  r = peer.Call(kSvc, "StatsContainer", sreq);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  grpc::StatsContainerResponse stats;
  ASSERT_TRUE(stats.ParseFromString(r.payload()));
  const grpc::CgroupStats& cs = stats.cgroup_stats();
  EXPECT_EQ(cs.memory_stats().usage().limit(), 64u << 20);
  EXPECT_GT(cs.memory_stats().usage().usage(), 0u);
  EXPECT_GE(cs.pids_stats().current(), 1u);
  EXPECT_EQ(cs.pids_stats().limit(), 20u);
  EXPECT_GT(cs.cpu_stats().cpu_usage().total_usage(), 0u);

  grpc::UpdateContainerRequest up;
  up.set_container_id("cg");
  up.mutable_resources()->mutable_pids()->set_limit(30);
  ASSERT_EQ(Code(peer.Call(kSvc, "UpdateContainer", up)), 0);
  r = peer.Call(kSvc, "StatsContainer", sreq);
  ASSERT_TRUE(stats.ParseFromString(r.payload()));
  EXPECT_EQ(stats.cgroup_stats().pids_stats().limit(), 30u);

  // Paused: no more ticks; resumed: ticks again.
  grpc::PauseContainerRequest pause;
  pause.set_container_id("cg");
  r = peer.Call(kSvc, "PauseContainer", pause);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  peer.Drive(milliseconds(100));
  std::string chunk;
  Read(peer, "cg", "init", false, &chunk, milliseconds(100));  // what came before the freeze
  EXPECT_EQ(Read(peer, "cg", "init", false, &chunk, milliseconds(300)), -2) << chunk;  // nothing: no reply
  grpc::ResumeContainerRequest resume;
  resume.set_container_id("cg");
  ASSERT_EQ(Code(peer.Call(kSvc, "ResumeContainer", resume)), 0);
  EXPECT_NE(ReadUntil(peer, "cg", "init", "tick"), "");

  // Removed while paused: still killed.
  ASSERT_EQ(Code(peer.Call(kSvc, "PauseContainer", pause)), 0);
  EXPECT_EQ(Code(Remove(peer, "cg")), 0);
  for (const char* ctl : {"pids", "memory", "freezer"}) {
    std::string dir = std::string("/sys/fs/cgroup/") + ctl;
    std::istringstream self(ReadText("/proc/self/cgroup"));
    std::string line;
    while (std::getline(self, line)) {
      if (line.find(std::string(":") + ctl + ":") == std::string::npos) continue;
      std::string path = line.substr(line.rfind(':') + 1);
      EXPECT_FALSE(std::filesystem::exists(dir + (path == "/" ? "" : path) + "/" + opt.service.cgroup_parent))
          << ctl;
    }
  }
}

// A container over its memory limit: the kernel's OOM killer ends its
// process, and a GetOOMEvent call (deferred until then) names the
// container; a call with nothing to report stays unanswered.
TEST_F(AgentContainerTest, OomKillsAreReportedByGetOomEvent) {
  Rootfs rootfs;
  ChannelServer::Options opt;
  opt.service.cgroup_parent = UniqueName("vmf-agent-test-");
  TestPeer peer(opt);
  // dd's 64 MiB buffer does not fit in 16 MiB.
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"});
  spec.mutable_linux()->mutable_resources()->mutable_memory()->set_limit(16 << 20);
  ::ttrpc::Response r = Create(peer, "oomc", "init", spec);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  grpc::StatsContainerRequest sreq;
  sreq.set_container_id("oomc");
  if (Code(peer.Call(kSvc, "StatsContainer", sreq)) == 14) {
    EXPECT_EQ(Code(Remove(peer, "oomc")), 0);
    GTEST_SKIP() << "no cgroup hierarchy here";
  }
  const uint32_t oom_call = peer.NextId();
  peer.SendRequest(oom_call, kSvc, "GetOOMEvent", grpc::GetOOMEventRequest());
  peer.Drive(milliseconds(100));
  EXPECT_FALSE(peer.HasFrame(oom_call));  // nothing yet: deferred
  ASSERT_EQ(Code(Start(peer, "oomc")), 0);
  EXPECT_EQ(Wait(peer, "oomc", "init"), 128 + SIGKILL);
  std::optional<::ttrpc::Response> got = peer.WaitResponse(oom_call, std::chrono::seconds(5));
  ASSERT_TRUE(got.has_value()) << "no OOM event";
  ASSERT_EQ(Code(*got), 0) << got->status().message();
  grpc::OOMEvent ev;
  ASSERT_TRUE(ev.ParseFromString(got->payload()));
  EXPECT_EQ(ev.container_id(), "oomc");
  // One kill, one event: the next call waits.
  const uint32_t again = peer.NextId();
  peer.SendRequest(again, kSvc, "GetOOMEvent", grpc::GetOOMEventRequest());
  peer.Drive(milliseconds(200));
  EXPECT_FALSE(peer.HasFrame(again));
  EXPECT_EQ(Code(Remove(peer, "oomc")), 0);
  EXPECT_FALSE(peer.HasFrame(again));
}

// The mount point of a cgroup v2 hierarchy on this host, or "".
std::string CgroupV2Mount() {
  std::istringstream in(ReadText("/proc/self/mounts"));
  std::string dev, dir, type;
  while (in >> dev >> dir >> type) {
    if (type == "cgroup2") return dir;
    in.ignore(1 << 20, '\n');
  }
  return "";
}

TEST_F(AgentContainerTest, CgroupV2FreezerAndMissingControllers) {
  const std::string root = CgroupV2Mount();
  if (root.empty()) GTEST_SKIP() << "no cgroup v2 hierarchy";
  Rootfs rootfs;
  ChannelServer::Options opt;
  opt.service.cgroup_root = root;
  opt.service.cgroup_parent = UniqueName("vmf-agent-test-");
  TestPeer peer(opt);
  const bool has_pids = ReadText(root + "/cgroup.controllers").find("pids") != std::string::npos;
  grpc::Spec spec = BasicSpec(rootfs.dir(), {"sh", "-c", "while true; do echo tick; sleep 0.05; done"});
  if (!has_pids) {
    grpc::Spec limited = spec;
    limited.mutable_linux()->mutable_resources()->mutable_pids()->set_limit(10);
    ::ttrpc::Response r = Create(peer, "limited", "init", limited);
    EXPECT_EQ(Code(r), 9);
    EXPECT_NE(r.status().message().find("pids"), std::string::npos) << r.status().message();
    EXPECT_EQ(peer.service().container_count(), 0u);
  }
  ::ttrpc::Response r = Create(peer, "v2", "init", spec);
  ASSERT_EQ(Code(r), 0) << r.status().message();
  ASSERT_EQ(Code(Start(peer, "v2")), 0);
  ASSERT_NE(ReadUntil(peer, "v2", "init", "tick"), "");
  grpc::PauseContainerRequest pause;
  pause.set_container_id("v2");
  r = peer.Call(kSvc, "PauseContainer", pause);
  if (Code(r) == 14) {
    EXPECT_EQ(Code(Remove(peer, "v2")), 0);
    GTEST_SKIP() << r.status().message();
  }
  ASSERT_EQ(Code(r), 0) << r.status().message();
  peer.Drive(milliseconds(100));
  std::string chunk;
  Read(peer, "v2", "init", false, &chunk, milliseconds(100));
  EXPECT_EQ(Read(peer, "v2", "init", false, &chunk, milliseconds(300)), -2) << chunk;
  grpc::ResumeContainerRequest resume;
  resume.set_container_id("v2");
  ASSERT_EQ(Code(peer.Call(kSvc, "ResumeContainer", resume)), 0);
  EXPECT_NE(ReadUntil(peer, "v2", "init", "tick"), "");
  grpc::StatsContainerRequest sreq;
  sreq.set_container_id("v2");
  EXPECT_EQ(Code(peer.Call(kSvc, "StatsContainer", sreq)), 0);
  ASSERT_EQ(Code(peer.Call(kSvc, "PauseContainer", pause)), 0);
  EXPECT_EQ(Code(Remove(peer, "v2")), 0);
  EXPECT_FALSE(std::filesystem::exists(root + "/" + opt.service.cgroup_parent));
}

}  // namespace
}  // namespace vmf::agent
