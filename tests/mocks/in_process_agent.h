// InProcessProxyLauncher: a ProxyLauncher for unit tests. Instead of
// spawning vmfactory-proxy it serves the real guest agent (AgentService
// behind a ChannelServer, host-safe: no clock or hostname changes; sysfs from
// a FakeGuest) on the VM's proxy socket, on a thread of the test. The
// "proxy process" is a placeholder process that names the VM dir, so pids
// and leak counts behave as with the real proxy.
//
//   InProcessProxyLauncher proxies(&guest);
//   VM::Create(config, nullptr, nullptr, {.backend = &backend, .proxy = &proxies});
//   proxies.SilenceAgents(true);   // later agents never answer
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/io.h"
#include "mocks/fake_guest.h"
#include "mocks/fake_hypervisor.h"
#include "server.h"
#include "vm/agent_proxy.h"

namespace vmf::testing {

// The agent of one fake VM, serving each new connection to its socket (the
// last one wins, as with a proxy's single agent channel).
class InProcessAgent {
 public:
  InProcessAgent(UniqueFd listen, agent::ChannelServer::Options options, bool silent)
      : listen_(std::move(listen)), options_(std::move(options)), silent_(silent) {
    thread_ = std::jthread([this](const std::stop_token& stop) { Loop(stop); });
  }
  ~InProcessAgent() {
    thread_.request_stop();
    thread_.join();
  }

 private:
  void Loop(const std::stop_token& stop) {
    std::unique_ptr<agent::ChannelServer> server;
    while (!stop.stop_requested()) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, server ? 0 : 10) > 0) {
        UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (conn && !silent_) {
          server.reset();
          server = std::make_unique<agent::ChannelServer>(std::move(conn), options_);
        } else if (conn) {
          silenced_.push_back(std::move(conn));  // accepted, never answered
        }
      }
      if (server) server->RunOnce(10);
    }
  }

  UniqueFd listen_;
  agent::ChannelServer::Options options_;
  bool silent_;
  std::vector<UniqueFd> silenced_;
  std::jthread thread_;
};

class InProcessProxyLauncher : public ProxyLauncher {
 public:
  explicit InProcessProxyLauncher(FakeGuest* guest) : guest_(guest) {}

  Result<std::unique_ptr<AgentProxy>> Launch(const ProxyRequest& req, const Deadline&) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (fail_launches_ > 0) {
        --fail_launches_;
        return Unavailable("fake: the proxy did not start");
      }
    }
    VMF_ASSIGN_OR_RETURN(UniqueFd listen, ListenUnix(ProxySocketPath(req.dir)));
    agent::ChannelServer::Options o;
    o.service.sysfs_root = guest_->sysfs_root();
    o.service.allow_system_changes = false;  // no host clock or hostname changes
    o.service.online_wait = std::chrono::milliseconds(200);
    VMF_ASSIGN_OR_RETURN(ChildProcess placeholder,
                         SpawnPlaceholder(req.dir, "fake-proxy.log", req.cgroup_procs_fds));
    {
      std::lock_guard<std::mutex> l(mu_);
      agents_[req.dir] = std::make_shared<InProcessAgent>(std::move(listen), o, silent_);
    }
    return std::unique_ptr<AgentProxy>(std::make_unique<Proxy>(this, req.dir, std::move(placeholder)));
  }

  Result<std::unique_ptr<AgentProxy>> Adopt(const ProxyRequest& req, pid_t pid) override {
    return std::unique_ptr<AgentProxy>(std::make_unique<Proxy>(this, req.dir, ChildProcess::Adopt(pid)));
  }

  void SilenceAgents(bool silent) {
    std::lock_guard<std::mutex> l(mu_);
    silent_ = silent;
  }
  void FailLaunches(int n) {
    std::lock_guard<std::mutex> l(mu_);
    fail_launches_ = n;
  }
  // Agents still served (a released VM's agent goes on until it is stopped).
  size_t live_agents() {
    std::lock_guard<std::mutex> l(mu_);
    return agents_.size();
  }

 private:
  class Proxy : public AgentProxy {
   public:
    Proxy(InProcessProxyLauncher* owner, std::string dir, ChildProcess process)
        : owner_(owner), dir_(std::move(dir)), process_(std::move(process)) {}
    ~Proxy() override { Stop(); }
    std::string url() const override { return "unix://" + ProxySocketPath(dir_); }
    pid_t pid() const override { return process_.pid(); }
    std::optional<std::string> Exited() override { return process_.Exited(); }
    void Stop() override {
      if (!process_.valid()) return;
      process_.Stop(std::chrono::milliseconds(200));
      owner_->Forget(dir_);
    }
    pid_t Release() override { return process_.Release(); }

   private:
    InProcessProxyLauncher* owner_;
    std::string dir_;
    ChildProcess process_;
  };

  void Forget(const std::string& dir) {
    std::shared_ptr<InProcessAgent> gone;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = agents_.find(dir);
      if (it == agents_.end()) return;
      gone = std::move(it->second);
      agents_.erase(it);
    }
    // Joined here, outside the lock.
  }

  FakeGuest* guest_;
  std::mutex mu_;
  bool silent_ = false;
  int fail_launches_ = 0;
  std::map<std::string, std::shared_ptr<InProcessAgent>> agents_;
};

}  // namespace vmf::testing
