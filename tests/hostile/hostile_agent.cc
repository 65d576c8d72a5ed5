// vmf-hostile-agent: a guest agent that misbehaves on purpose, to test the
// host's defences (tests/integration/hostile_agent_test.cc). It is PID 1 of a
// test initramfs: the normal guest image with a second cpio archive appended
// whose /init is this binary (tests/hostile/make_initrd.cmake).
//
// The mode comes from the kernel command line, vmf.hostile=MODE. Every mode
// but `early` answers the proxy's sync and the boot Health.Check correctly,
// so that VM::Create succeeds, and misbehaves on the first request that is
// not a Health.Check (then it reads and ignores everything, answering only
// Health.Check):
//   garbage        64 KiB of junk instead of the reply
//   oversized      a reply header announcing 4 GiB-1 bytes, 256 KiB of it
//   halfframe      the first half of a reply frame, then silence
//   unknownstream  a reply for a stream id that was never opened, then the
//                  real reply
//   flood          the real agent, serving normally, while a child process
//                  writes to the console as fast as it can, forever
//   early          junk from the first byte on, forever; never answers the sync
// As PID 1 it never exits.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "health.pb.h"
#include "init.h"
#include "log.h"
#include "server.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"

namespace vmf::agent {
namespace {

using ttrpc::DecodeEvent;
using ttrpc::EncodeFrame;

// Deterministic junk (xorshift64), so that every run sends the same bytes.
std::string Junk(size_t n, uint64_t* state) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    out[i] = static_cast<char>(x >> 24);
  }
  return out;
}

// Writes all of data to the non-blocking port, waiting for room as long as
// it takes (a hostile agent has nothing better to do). False on an error.
bool WriteAllToPort(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    Log("hostile: writing the port: %s", n < 0 ? std::strerror(errno) : "wrote 0");
    return false;
  }
  return true;
}

std::string ResponseFrame(uint32_t stream_id, const ::ttrpc::Response& r) {
  return EncodeFrame(stream_id, ttrpc::kTypeResponse, 0, r.SerializeAsString());
}

std::string ServingFrame(uint32_t stream_id) {
  grpc::HealthCheckResponse health;
  health.set_status(grpc::HealthCheckResponse::SERVING);
  ::ttrpc::Response r;
  r.set_payload(health.SerializeAsString());
  return ResponseFrame(stream_id, r);
}

// What the mode sends instead of the reply to request `id`.
std::string Misbehaviour(const std::string& mode, uint32_t id, uint64_t* rng) {
  if (mode == "garbage") return Junk(64 * 1024, rng);
  if (mode == "oversized") {
    std::string hdr = EncodeFrame(id, ttrpc::kTypeResponse, 0, "");
    hdr[0] = hdr[1] = hdr[2] = hdr[3] = '\xff';  // 4 GiB - 1
    return hdr + std::string(256 * 1024, 'x');
  }
  if (mode == "halfframe") {
    ::ttrpc::Response r;
    r.set_payload(std::string(1000, 'h'));
    std::string frame = ResponseFrame(id, r);
    return frame.substr(0, frame.size() / 2);
  }
  if (mode == "unknownstream") {
    ::ttrpc::Response forged;
    forged.set_payload("forged");
    // An odd id far above any the host has used, then the real (empty) reply.
    return ResponseFrame(id + 1000000, forged) + ResponseFrame(id, ::ttrpc::Response());
  }
  Log("hostile: unknown mode '%s': answering nothing", mode.c_str());
  return "";
}

// Serves the sync and Health.Check, misbehaves on the first other request.
[[noreturn]] void ServeHostile(int fd, const std::string& mode) {
  ttrpc::FrameDecoder decoder;
  std::vector<DecodeEvent> events;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  bool misbehaved = false;
  char buf[64 * 1024];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 1000);
    if ((p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLIN)) {
      ::usleep(50 * 1000);  // no host connected
      continue;
    }
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EINTR) ::usleep(50 * 1000);
      continue;
    }
    events.clear();
    decoder.Feed(std::string_view(buf, static_cast<size_t>(n)), &events);
    for (DecodeEvent& ev : events) {
      if (ev.kind != DecodeEvent::kFrame || ev.frame.type != ttrpc::kTypeRequest) continue;
      ::ttrpc::Request req;
      if (!req.ParseFromString(ev.frame.payload)) continue;
      const uint32_t id = ev.frame.stream_id;
      if (req.service() == "grpc.Health" && req.method() == "Check") {
        WriteAllToPort(fd, ServingFrame(id));
      } else if (!misbehaved) {
        misbehaved = true;
        Log("hostile: misbehaving (%s) on %s/%s, stream %u", mode.c_str(), req.service().c_str(),
            req.method().c_str(), id);
        WriteAllToPort(fd, Misbehaviour(mode, id, &rng));
      }
    }
  }
}

// Junk from the first byte, forever; whatever the host sends is read and ignored.
[[noreturn]] void FloodChannel(int fd) {
  uint64_t rng = 0x2545f4914f6cdd1dull;
  const std::string junk = Junk(64 * 1024, &rng);
  size_t off = 0;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    ::poll(&p, 1, 1000);
    if (p.revents & POLLIN) {
      while (::read(fd, buf, sizeof(buf)) > 0) {
      }
    }
    if ((p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLOUT)) {
      ::usleep(50 * 1000);  // no host connected
      continue;
    }
    if (p.revents & POLLOUT) {
      ssize_t n = ::write(fd, junk.data() + off, junk.size() - off);
      if (n > 0) {
        off = (off + static_cast<size_t>(n)) % junk.size();
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        ::usleep(10 * 1000);
      }
    }
  }
}

// A child that writes to the console as fast as it can, forever.
void StartConsoleFlood() {
  pid_t pid = ::fork();
  if (pid < 0) {
    Log("hostile: fork: %s", std::strerror(errno));
    return;
  }
  if (pid > 0) return;
  int fd = ::open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) fd = STDERR_FILENO;
  std::string chunk;
  for (unsigned line = 0; chunk.size() < 4000; ++line) {
    chunk += "vmf-hostile console flood line " + std::to_string(line) +
             " ..................................................\n";
  }
  for (;;) {
    if (::write(fd, chunk.data(), chunk.size()) < 0 && errno != EINTR && errno != EAGAIN) ::usleep(1000);
  }
}

// The real agent's serving loop (agent/main.cc), for the flood mode.
[[noreturn]] void ServeNormally(bool pid1) {
  for (;;) {
    const Status s = ServeOnPort(PortNameFromCmdline(ReadCmdline()), pid1, "hostile: serving normally");
    Log("hostile: cannot open the agent port: %s", s.ToString().c_str());
    ::sleep(1);
  }
}

}  // namespace
}  // namespace vmf::agent

int main() {
  using namespace vmf::agent;
  const bool pid1 = ::getpid() == 1;
  InitGuest(pid1);
  const std::string cmdline = ReadCmdline();
  const std::string mode = CmdlineValue(cmdline, "vmf.hostile");
  Log("hostile agent, mode '%s' (%.3f s since boot)", mode.c_str(), SecondsSinceBoot());
  try {
    if (mode == "flood") {
      StartConsoleFlood();
      ServeNormally(pid1);
    }
    for (;;) {
      auto port = OpenAgentPort("/sys/class/virtio-ports", "/dev", PortNameFromCmdline(cmdline),
                                std::chrono::seconds(10));
      if (!port.ok()) {
        Log("hostile: cannot open the agent port: %s", port.status().ToString().c_str());
        ::sleep(1);
        continue;
      }
      if (mode == "early") FloodChannel(port->get());
      ServeHostile(port->get(), mode);
    }
  } catch (const std::exception& e) {
    Log("hostile: fatal: %s", e.what());
  }
  for (;;) ::pause();  // PID 1 must never exit
}
