#include "server.h"

#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

#include "init.h"
#include "log.h"
#include "ttrpc/sync.h"
#include "ttrpc/wire.h"

namespace vmf::agent {
namespace {

int MsUntil(ChannelServer::Clock::time_point now, ChannelServer::Clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count() + 1;
  return static_cast<int>(std::clamp<long long>(ms, 0, 1 << 30));
}

int MinTimeout(int a, int b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return std::min(a, b);
}

}  // namespace

ChannelServer::ChannelServer(UniqueFd channel) : ChannelServer(std::move(channel), Options()) {}

ChannelServer::ChannelServer(UniqueFd channel, Options options)
    : opt_(std::move(options)),
      channel_(std::move(channel)),
      service_([this](uint32_t id, const ::ttrpc::Response& r) { Reply(id, r); }, opt_.service) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, &old_mask_);
  sigfd_.reset(::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!sigfd_) Log("signalfd: %s (falling back to polling for exits)", std::strerror(errno));
  struct sigaction ign;
  std::memset(&ign, 0, sizeof(ign));
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, &old_sigpipe_);
  last_rx_ = Clock::now();
}

ChannelServer::~ChannelServer() {
  ::sigaction(SIGPIPE, &old_sigpipe_, nullptr);
  ::sigprocmask(SIG_SETMASK, &old_mask_, nullptr);
}

void ChannelServer::Run(const std::atomic<bool>* stop) {
  while (stop == nullptr || !stop->load()) RunOnce(1000);
}

void ChannelServer::RunOnce(int max_wait_ms) {
  auto now = Clock::now();
  std::vector<pollfd> fds;
  int timeout = max_wait_ms;

  size_t sig_index = SIZE_MAX, chan_index = SIZE_MAX;
  if (sigfd_) {
    sig_index = fds.size();
    fds.push_back({sigfd_.get(), POLLIN, 0});
  } else {
    timeout = MinTimeout(timeout, 100);
  }
  if (now >= paused_until_) {
    chan_index = fds.size();
    short events = POLLIN;
    if (!out_.empty()) events |= POLLOUT;
    fds.push_back({channel_.get(), events, 0});
  } else {
    timeout = MinTimeout(timeout, MsUntil(now, paused_until_));
  }
  if (decoder_.mid_frame())
    timeout = MinTimeout(timeout, MsUntil(now, last_rx_ + opt_.partial_frame_timeout));
  size_t svc_index = fds.size();
  service_.AddPollFds(&fds);

  int n = ::poll(fds.data(), fds.size(), timeout);
  if (n < 0 && errno != EINTR) {
    Log("poll: %s", std::strerror(errno));
    ::usleep(10000);  // never spin
  }
  if (n < 0) {
    for (pollfd& p : fds) p.revents = 0;
  }
  now = Clock::now();

  if (sig_index != SIZE_MAX && (fds[sig_index].revents & POLLIN)) {
    signalfd_siginfo info[8];
    while (::read(sigfd_.get(), info, sizeof(info)) > 0) {
    }
  }

  // Process output first: it may answer deferred reads before new requests.
  service_.HandlePollFds(fds.data() + svc_index, fds.size() - svc_index);

  if (chan_index != SIZE_MAX) {
    short rev = fds[chan_index].revents;
    if (rev & POLLNVAL) {
      if (!nval_logged_) Log("the channel fd is invalid");
      nval_logged_ = true;
      paused_until_ = now + opt_.hangup_pause;
    } else {
      if (rev & POLLOUT) Flush();
      if (rev & (POLLIN | POLLHUP | POLLERR)) ReadChannel(rev);
      if (n >= 0 && !(rev & (POLLHUP | POLLERR)) && !connected_ && now >= paused_until_) {
        connected_ = true;
        Log("host connected");
      }
    }
  }

  if (decoder_.mid_frame() && now - last_rx_ >= opt_.partial_frame_timeout) {
    Log("dropping a partial frame (%zu bytes) after %lld ms of silence", decoder_.buffered(),
        static_cast<long long>(opt_.partial_frame_timeout.count()));
    decoder_.Reset();
  }

  service_.ReapChildren();
  service_.CollectGarbage();
}

void ChannelServer::ReadChannel(short revents) {
  char buf[64 * 1024];
  std::vector<ttrpc::DecodeEvent> events;
  size_t total = 0;
  bool eof = false;
  // Bounded per iteration so process pipes get their turn.
  while (total < (1u << 20)) {
    ssize_t n = ::read(channel_.get(), buf, sizeof(buf));
    if (n > 0) {
      total += static_cast<size_t>(n);
      last_rx_ = Clock::now();
      if (!connected_) {
        connected_ = true;
        Log("host connected");
      }
      events.clear();
      decoder_.Feed(std::string_view(buf, static_cast<size_t>(n)), &events);
      for (ttrpc::DecodeEvent& ev : events) HandleEvent(ev);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) Log("reading the channel: %s", std::strerror(errno));
    eof = true;
    break;
  }
  if (eof || ((revents & (POLLHUP | POLLERR)) && total == 0)) OnHangup(Clock::now());
}

void ChannelServer::OnHangup(Clock::time_point now) {
  if (connected_) Log("host disconnected");
  connected_ = false;
  decoder_.Reset();
  DropOutbound();
  paused_until_ = now + opt_.hangup_pause;
}

void ChannelServer::HandleEvent(ttrpc::DecodeEvent& ev) {
  const uint32_t id = ev.frame.stream_id;
  if (ev.kind == ttrpc::DecodeEvent::kOversized) {
    ReplyError(id, Code::kResourceExhausted,
               "message length " + std::to_string(ev.declared_length) + " exceeds maximum message size of " +
                   std::to_string(ttrpc::kMaxPayload));
    return;
  }
  if (ev.frame.type != ttrpc::kTypeRequest) return;  // data frames are unused

  const bool id_ok = ids_.Allows(id);
  ::ttrpc::Request req;
  if (!req.ParseFromString(ev.frame.payload)) {
    if (id_ok) ids_.Accept(id);
    ReplyError(id, Code::kInvalidArgument, "cannot parse ttrpc.Request");
    return;
  }
  if (id % 2 == 1 && ttrpc::IsSyncRequest(req)) {
    if (service_.deferred_count() > 0) Log("resync on stream %u: dropping deferred replies", id);
    service_.DropDeferred();
    ids_.Restart(id);
  } else if (!id_ok) {
    ReplyError(id, Code::kInvalidArgument,
               "stream id " + std::to_string(id) + " is even or not above " + std::to_string(ids_.last()));
    return;
  } else {
    ids_.Accept(id);
  }
  try {
    service_.HandleRequest(id, req);
  } catch (const std::exception& e) {
    ReplyError(id, Code::kInternal, std::string("agent error: ") + e.what());
  } catch (...) {
    ReplyError(id, Code::kInternal, "agent error");
  }
}

void ChannelServer::ReplyError(uint32_t stream_id, Code code, const std::string& message) {
  if (!connected_) return;  // nobody to read it; a new session resyncs anyway
  Send(stream_id, ttrpc::ErrorResponse(code, message));
}

void ChannelServer::Reply(uint32_t stream_id, const ::ttrpc::Response& response) {
  if (!connected_) return;  // nobody to read it; a new session resyncs anyway
  std::string payload = response.SerializeAsString();
  if (payload.size() > ttrpc::kMaxPayload)
    payload = ttrpc::ErrorResponse(Code::kInternal, "response too large");
  Send(stream_id, payload);
}

void ChannelServer::Send(uint32_t stream_id, const std::string& payload) {
  std::string frame = ttrpc::EncodeFrame(stream_id, ttrpc::kTypeResponse, 0, payload);
  size_t dropped = 0;
  while (out_bytes_ + frame.size() > opt_.max_outbound_bytes) {
    // Drop the oldest frame not yet started (a started one must finish).
    size_t idx = out_offset_ > 0 ? 1 : 0;
    if (idx >= out_.size()) break;
    out_bytes_ -= out_[idx].size();
    out_.erase(out_.begin() + static_cast<std::ptrdiff_t>(idx));
    ++dropped;
  }
  if (dropped > 0) Log("outbound queue full: dropped %zu old replies", dropped);
  out_bytes_ += frame.size();
  out_.push_back(std::move(frame));
  Flush();
}

void ChannelServer::Flush() {
  while (!out_.empty()) {
    const std::string& f = out_.front();
    ssize_t n = ::write(channel_.get(), f.data() + out_offset_, f.size() - out_offset_);
    if (n > 0) {
      out_offset_ += static_cast<size_t>(n);
      if (out_offset_ == f.size()) {
        out_bytes_ -= f.size();
        out_.pop_front();
        out_offset_ = 0;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;  // wait for POLLOUT
    Log("writing the channel: %s; dropping %zu queued bytes", n < 0 ? std::strerror(errno) : "wrote 0",
        out_bytes_);
    DropOutbound();
    return;
  }
}

void ChannelServer::DropOutbound() {
  out_.clear();
  out_offset_ = 0;
  out_bytes_ = 0;
}

Status ServeOnPort(const std::string& name, bool pid1, const char* banner) {
  auto port = OpenAgentPort("/sys/class/virtio-ports", "/dev", name, std::chrono::seconds(10));
  if (!port.ok()) return port.status();
  ChannelServer::Options opts;
  opts.service.reap_all_children = pid1;
  ChannelServer server(std::move(*port), opts);
  Log("%s (%.3f s since boot)", banner, SecondsSinceBoot());
  server.Run(nullptr);
  return OkStatus();
}

}  // namespace vmf::agent
