// Fuzz target: the guest agent's request handling, in-process, without a VM.
//
// Input: the bytes the host writes on the agent's channel. A ChannelServer
// (agent/server.h) serves one end of a socketpair; the input is written to
// the other end and the server is driven (RunOnce) until it has read and
// answered everything, then the host end hangs up. This runs the agent's own
// code end to end: its FrameDecoder, stream-id and vmf-sync rules,
// ttrpc.Request parsing, AgentService::HandleRequest for every method, and
// the bounded outbound queue. Every byte the agent writes back must be whole
// response frames.
//
// Host safety (the fuzzer runs on a development machine, often as root): the
// service runs with Options::allow_exec = false (ExecProcess checks its
// request, then answers PERMISSION_DENIED instead of starting a process) and
// allow_system_changes = false (SetGuestDateTime and CreateSandbox check their
// request but do not set the clock or the hostname); ReseedRandomDev writes to
// /dev/null, which refuses the ioctl; OnlineCPUMem and GetGuestDetails look at
// a sysfs root that does not exist, and OnlineCPUMem does not wait. With no
// process ever started, WaitProcess, SignalProcess, the stdio methods and
// CloseStdin only reach their "no such process" answers.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "log.h"
#include "server.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"

namespace {

namespace vt = vmf::ttrpc;
using namespace vmf;  // vt:: is vmf::ttrpc, ::ttrpc:: the protos

agent::ChannelServer::Options HostSafeOptions() {
  agent::ChannelServer::Options o;
  o.service.allow_exec = false;
  o.service.allow_system_changes = false;
  o.service.random_device = "/dev/null";
  o.service.sysfs_root = "/nonexistent/vmfactory-fuzz-sysfs";
  o.service.online_wait = std::chrono::milliseconds(0);
  o.hangup_pause = std::chrono::milliseconds(0);
  return o;
}

// Reads whatever the agent wrote so far and checks it is response frames.
void Collect(int fd, vt::FrameDecoder* decoder, size_t* replies) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) return;
    std::vector<vt::DecodeEvent> evs;
    decoder->Feed(std::string_view(buf, static_cast<size_t>(n)), &evs);
    for (const vt::DecodeEvent& ev : evs) {
      FUZZ_CHECK(ev.kind == vt::DecodeEvent::kFrame);
      FUZZ_CHECK(ev.frame.type == vt::kTypeResponse && ev.frame.flags == 0);
      ::ttrpc::Response resp;
      FUZZ_CHECK(resp.ParseFromString(ev.frame.payload));
      ++*replies;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vmf::fuzz::QuietProtobuf();
  static const bool quiet = (agent::SetLogEnabled(false), true);
  (void)quiet;
  static const agent::ChannelServer::Options options = HostSafeOptions();

  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
  const int agent_end = sv[0];
  UniqueFd host(sv[1]);
  vt::FrameDecoder replies_decoder;
  size_t replies = 0;
  {
    agent::ChannelServer server(UniqueFd(agent_end), options);
    std::string_view left = vmf::fuzz::AsView(data, size);
    // Write everything, letting the agent read and answer as it goes.
    while (!left.empty()) {
      ssize_t n = ::send(host.get(), left.data(), left.size(), MSG_NOSIGNAL);
      if (n > 0) left.remove_prefix(static_cast<size_t>(n));
      server.RunOnce(0);
      Collect(host.get(), &replies_decoder, &replies);
    }
    // Until the agent has read everything and its outbound queue is empty.
    for (int i = 0; i < 1000; ++i) {
      server.RunOnce(0);
      Collect(host.get(), &replies_decoder, &replies);
      int unread = 0;
      FUZZ_CHECK(::ioctl(agent_end, FIONREAD, &unread) == 0);
      if (unread == 0 && server.outbound_bytes() == 0) break;
    }
    int unread = 0;
    FUZZ_CHECK(::ioctl(agent_end, FIONREAD, &unread) == 0 && unread == 0);
    FUZZ_CHECK(server.outbound_bytes() == 0);
    FUZZ_CHECK(server.service().process_count() == 0);  // nothing may have been started
    FUZZ_CHECK(server.service().deferred_count() == 0);
    // The host goes away; the agent drops any half frame and waits for the next one.
    host.reset();
    server.RunOnce(0);
    FUZZ_CHECK(!server.host_connected());
  }
  // Nothing was left half-written: the agent writes whole frames.
  FUZZ_CHECK(!replies_decoder.mid_frame());
  return 0;
}
