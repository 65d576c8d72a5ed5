// Fuzz target: the daemon's API request decoding, without a pool, a socket
// or a VM.
//
// Input: byte 0 picks how the stream arrives in pieces (fuzz_util.h Chunks);
// the rest is what a client writes on the daemon's socket.
//
// The stream goes through a FrameDecoder into ttrpc::Server::HandleFrame
// (src/ttrpc/server.cc: stream-id rules, ttrpc.Request parsing, dispatch by
// service/method, error replies), exactly as a connection does, with the
// daemon's four methods registered. GetVM's handler is the daemon's decoding
// and validation, DecodeGetVMRequest (src/daemon/request.h), against a base
// config whose files exist, so that validation runs to the end; where the
// daemon would then take a VM from its pool, the handler answers with the
// config it decoded. Every reply must be one well-formed response frame on
// the request's stream. The whole input is also given to DecodeGetVMRequest
// directly.
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/client.h"
#include "daemon/request.h"
#include "factory.pb.h"
#include "fuzz_util.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/server.h"

namespace {

namespace vt = vmf::ttrpc;
using namespace vmf;  // vt:: is vmf::ttrpc, ::ttrpc:: the protos

// A base config that validates here: every file it names exists.
const VMConfig& Base() {
  static const VMConfig base = [] {
    VMConfig c;
    c.hypervisor.qemu.path = "/bin/sh";
    c.hypervisor.kernel = "/proc/self/exe";
    c.hypervisor.initrd = "/proc/self/exe";
    c.hypervisor.qemu.accel = Accel::kTcg;
    c.proxy.path = "/bin/sh";
    c.runtime_dir = "/nonexistent/vmfactory-fuzz";
    return c;
  }();
  return base;
}

void CheckDecoded(const Result<VMConfig>& r) {
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() != Code::kOk);
    return;
  }
  const HypervisorConfig& h = r->hypervisor;
  FUZZ_CHECK(h.vcpus >= 1 && h.vcpus <= h.max_vcpus && h.max_vcpus <= 240);
  FUZZ_CHECK(h.memory_mib >= 64 && h.memory_mib <= h.max_memory_mib && h.max_memory_mib <= (1u << 20));
  FUZZ_CHECK(h.kernel == Base().hypervisor.kernel && h.qemu.path == Base().hypervisor.qemu.path);
}

vt::Server& Api() {
  static vt::Server* server = [] {
    auto* s = new vt::Server();
    s->Register(kFactoryService, "GetVM",
                [](const std::string& payload, const vt::Peer& peer) -> Result<std::string> {
                  Result<VMConfig> r = DecodeGetVMRequest(payload, Base());
                  CheckDecoded(r);
                  if (!r.ok()) return r.status();
                  if (peer.pid <= 0)
                    return FailedPrecondition("cannot tell which process asks (no SO_PEERCRED)");
                  vmfactory::v1::VM out;
                  out.set_id("fuzz");
                  out.set_cpus(r->hypervisor.vcpus);
                  out.set_memory_mib(r->hypervisor.memory_mib);
                  out.set_source("direct");
                  return out.SerializeAsString();
                });
    s->Register(kFactoryService, "Status", [](const std::string&, const vt::Peer&) -> Result<std::string> {
      vmfactory::v1::StatusResponse st;
      st.set_daemon_pid(1);
      return st.SerializeAsString();
    });
    s->Register(kFactoryService, "Config", [](const std::string&, const vt::Peer&) -> Result<std::string> {
      return vmfactory::v1::ConfigResponse().SerializeAsString();
    });
    s->Register(kFactoryService, "Quit", [](const std::string&, const vt::Peer&) -> Result<std::string> {
      return vmfactory::v1::Empty().SerializeAsString();
    });
    return s;
  }();
  return *server;
}

// A reply frame from HandleFrame: one whole response frame on `id`.
void CheckReply(const std::string& reply, uint32_t id) {
  vt::FrameDecoder d;
  std::vector<vt::DecodeEvent> evs;
  d.Feed(reply, &evs);
  FUZZ_CHECK(evs.size() == 1 && !d.mid_frame());
  FUZZ_CHECK(evs[0].kind == vt::DecodeEvent::kFrame);
  FUZZ_CHECK(evs[0].frame.stream_id == id && evs[0].frame.type == vt::kTypeResponse);
  ::ttrpc::Response resp;
  FUZZ_CHECK(resp.ParseFromString(evs[0].frame.payload));
  if (resp.has_status() && resp.status().code() != 0) {
    FUZZ_CHECK(resp.status().code() > 0 && resp.status().code() <= 16);
    FUZZ_CHECK(resp.status().message().size() <= 4096);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto input = vmf::fuzz::SplitSeed(data, size);
  if (!input) return 0;
  const uint8_t seed = input->seed;
  const std::string_view stream = input->stream;

  CheckDecoded(DecodeGetVMRequest(std::string(stream), Base()));

  vt::Server& server = Api();
  const vt::Peer peer{::getpid(), ::getuid()};
  vt::FrameDecoder decoder;
  std::vector<vt::DecodeEvent> events;
  uint32_t last_id = 0;
  for (std::string_view piece : vmf::fuzz::Chunks(stream, seed)) {
    events.clear();
    decoder.Feed(piece, &events);
    for (const vt::DecodeEvent& ev : events) {
      const uint32_t before = last_id;
      std::string reply = server.HandleFrame(ev, &last_id, peer);
      const bool request = ev.kind == vt::DecodeEvent::kFrame && ev.frame.type == vt::kTypeRequest;
      FUZZ_CHECK(reply.empty() == (ev.kind == vt::DecodeEvent::kFrame && !request));
      // Stream ids only go up, and only to an odd id a request came on.
      FUZZ_CHECK(last_id == before ||
                 (last_id == ev.frame.stream_id && last_id > before && last_id % 2 == 1));
      if (!reply.empty()) CheckReply(reply, ev.frame.stream_id);
    }
  }
  return 0;
}
