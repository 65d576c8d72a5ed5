// Spawning one guest process (agent/spawn.h), without the service around it.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "spawn.h"

namespace vmf::agent {
namespace {

grpc::Process Proc(const std::vector<std::string>& args) {
  grpc::Process p;
  for (auto& a : args) p.add_args(a);
  return p;
}

// Reads a non-blocking pipe to EOF.
std::string ReadToEof(int fd) {
  std::string all;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      all.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 1000);
    } else if (!(n < 0 && errno == EINTR)) {
      return all;
    }
  }
}

int Reap(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(AgentSpawnTest, RunsWithPipesAndDefaultEnvironment) {
  Result<Spawned> s = Spawn(Proc({"sh", "-c", "echo $PATH $HOME; pwd; echo err >&2; exit 4"}));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  s->in.reset();
  EXPECT_EQ(ReadToEof(s->out.get()), std::string(kDefaultPath) + " /root\n/\n");
  EXPECT_EQ(ReadToEof(s->err.get()), "err\n");
  EXPECT_EQ(Reap(s->pid), 4);
}

TEST(AgentSpawnTest, OwnSessionAndNoInheritedFds) {
  // $$ is the shell's pid; it leads its own session. Only 0-2 (and the fd of
  // ls itself reading /proc/self/fd) are open.
  Result<Spawned> s =
      Spawn(Proc({"sh", "-c", "[ $(cut -d' ' -f6 /proc/$$/stat) = $$ ] && echo leader; ls /proc/self/fd"}));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::string out = ReadToEof(s->out.get());
  Reap(s->pid);
  EXPECT_EQ(out.substr(0, 7), "leader\n") << out;
  EXPECT_EQ(out.substr(7), "0\n1\n2\n3\n");
}

TEST(AgentSpawnTest, SearchesThePathOfTheRequest) {
  grpc::Process p = Proc({"sh", "-c", "echo $FOO"});
  p.add_env("FOO=bar");
  p.add_env("PATH=/no/such/dir:/bin:/usr/bin");
  p.set_cwd("/tmp");
  Result<Spawned> s = Spawn(p);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(ReadToEof(s->out.get()), "bar\n");
  EXPECT_EQ(Reap(s->pid), 0);

  p.set_args(0, "sh-not-here-vmf");
  s = Spawn(p);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kNotFound);
  EXPECT_NE(s.status().message().find("exec sh-not-here-vmf"), std::string::npos) << s.status().message();
}

TEST(AgentSpawnTest, FailuresBeforeExecNameTheStage) {
  grpc::Process p = Proc({"true"});
  p.set_cwd("/no/such/dir");
  Result<Spawned> s = Spawn(p);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kNotFound);
  EXPECT_NE(s.status().message().find("chdir /no/such/dir"), std::string::npos) << s.status().message();
}

TEST(AgentSpawnTest, RefusesNulBytesAndEmptyArgs) {
  EXPECT_EQ(Spawn(Proc({})).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spawn(Proc({std::string("a\0b", 3)})).status().code(), Code::kInvalidArgument);
  grpc::Process env = Proc({"true"});
  env.add_env(std::string("A=\0", 3));
  EXPECT_EQ(Spawn(env).status().code(), Code::kInvalidArgument);
  grpc::Process cwd = Proc({"true"});
  cwd.set_cwd(std::string("/\0tmp", 5));
  EXPECT_EQ(Spawn(cwd).status().code(), Code::kInvalidArgument);
}

TEST(AgentSpawnTest, RlimitsGroupsAndNoNewPrivileges) {
  if (::geteuid() != 0) GTEST_SKIP() << "setgroups needs root";
  grpc::Process p = Proc({"sh", "-c", "ulimit -n; id -G; grep NoNewPrivs /proc/self/status"});
  grpc::POSIXRlimit* l = p.add_rlimits();
  l->set_type("RLIMIT_NOFILE");
  l->set_soft(77);
  l->set_hard(88);
  p.mutable_user()->set_gid(5);
  p.mutable_user()->add_additionalgids(6);
  p.mutable_user()->add_additionalgids(7);
  p.set_nonewprivileges(true);
  Result<Spawned> s = Spawn(p);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(ReadToEof(s->out.get()), "77\n5 6 7\nNoNewPrivs:\t1\n");
  EXPECT_EQ(Reap(s->pid), 0);

  l->set_soft(100);  // above the hard limit
  EXPECT_EQ(Spawn(p).status().code(), Code::kInvalidArgument);
  l->set_type("RLIMIT_WHATEVER");
  EXPECT_EQ(Spawn(p).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(RlimitResource("RLIMIT_NPROC"), RLIMIT_NPROC);
  EXPECT_EQ(RlimitResource("NOFILE"), -1);
}

TEST(AgentSpawnTest, BeforeStartRunsBeforeTheChildGoesOn) {
  pid_t seen = -1;
  SpawnOptions o;
  o.before_start = [&seen](pid_t pid) {
    seen = pid;
    return OkStatus();
  };
  Result<Spawned> s = Spawn(Proc({"sh", "-c", "echo $$"}), o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(seen, s->pid);
  EXPECT_EQ(ReadToEof(s->out.get()), std::to_string(s->pid) + "\n");
  EXPECT_EQ(Reap(s->pid), 0);

  // An error is the answer, and the child never ran (nor is left behind).
  char path[] = "/tmp/vmf_spawn_gate_XXXXXX";
  ASSERT_NE(::mkdtemp(path), nullptr);
  std::string flag = std::string(path) + "/ran";
  o.before_start = [&seen](pid_t pid) {
    seen = pid;
    return FailedPrecondition("no cgroup for you");
  };
  s = Spawn(Proc({"touch", flag}), o);
  EXPECT_EQ(s.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(s.status().message(), "no cgroup for you");
  EXPECT_EQ(::kill(seen, 0), -1);  // reaped
  EXPECT_NE(::access(flag.c_str(), F_OK), 0);
  ::rmdir(path);

  ContainerInit init;
  ContainerJoin join;
  SpawnOptions both;
  both.init = &init;
  both.join = &join;
  EXPECT_EQ(Spawn(Proc({"true"}), both).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace vmf::agent
