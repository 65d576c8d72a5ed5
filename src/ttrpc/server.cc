#include "ttrpc/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <memory>

#include "common/io.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/wire.h"

namespace vmf::ttrpc {
Server::~Server() { Shutdown(); }

void Server::Register(const std::string& service, const std::string& method, Handler handler) {
  handlers_[service + "/" + method] = std::move(handler);
}

std::string Server::Dispatch(const std::string& payload, const Peer& peer) {
  ::ttrpc::Request req;
  if (!req.ParseFromString(payload)) return ErrorResponse(Code::kInvalidArgument, "malformed ttrpc request");
  auto it = handlers_.find(req.service() + "/" + req.method());
  if (it == handlers_.end()) {
    return ErrorResponse(Code::kUnimplemented, req.service().substr(0, 128) + "/" +
                                                   req.method().substr(0, 128) + " is not implemented");
  }
  Result<std::string> out = it->second(req.payload(), peer);
  if (!out.ok()) return ErrorResponse(out.status().code(), out.status().message());
  return OkResponse(std::move(*out));
}

std::string Server::HandleFrame(const DecodeEvent& ev, uint32_t* last_id, const Peer& peer) {
  uint32_t id = ev.frame.stream_id;
  std::string reply;
  if (ev.kind == DecodeEvent::kOversized) {
    reply = ErrorResponse(Code::kResourceExhausted, "request exceeds the 4 MiB ttrpc limit");
  } else if (ev.frame.type != kTypeRequest) {
    return "";
  } else if (!StreamIdRule(*last_id).Allows(id)) {
    reply = ErrorResponse(Code::kInvalidArgument,
                          "stream id " + std::to_string(id) + " must be odd and increasing");
  } else {
    *last_id = id;
    reply = Dispatch(ev.frame.payload, peer);
  }
  return EncodeFrame(id, kTypeResponse, 0, reply);
}

void Server::ServeConnection(UniqueFd conn, Peer peer) {
  const int fd = conn.get();
  FrameDecoder decoder;
  std::vector<DecodeEvent> events;
  uint32_t last_id = 0;
  // Requests running on their own threads (max_inflight_ > 1): replies are
  // written whole under write_mu, and the fd stays open until all are done.
  struct Inflight {
    std::mutex write_mu, mu;
    std::condition_variable cv;
    size_t running = 0;
    bool broken = false;  // a write failed: the connection is dropped
  };
  auto inflight = std::make_shared<Inflight>();
  auto send = [fd](Inflight& f, const std::string& reply) {
    std::lock_guard<std::mutex> l(f.write_mu);
    if (f.broken) return;
    // A client that stops reading its replies is dropped, not waited for.
    if (!WriteAll(fd, reply, Deadline(std::chrono::seconds(10))).ok()) {
      f.broken = true;
      ::shutdown(fd, SHUT_RDWR);
    }
  };
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    events.clear();
    decoder.Feed(std::string_view(buf, static_cast<size_t>(n)), &events);
    for (auto& ev : events) {
      const uint32_t id = ev.frame.stream_id;
      const bool valid = ev.kind != DecodeEvent::kOversized && ev.frame.type == kTypeRequest &&
                         StreamIdRule(last_id).Allows(id);
      if (max_inflight_ <= 1 || !valid) {
        std::string reply = HandleFrame(ev, &last_id, peer);
        if (!reply.empty()) send(*inflight, reply);
        continue;
      }
      last_id = id;
      {
        std::lock_guard<std::mutex> l(inflight->mu);
        if (inflight->running >= max_inflight_) {
          send(*inflight, EncodeFrame(id, kTypeResponse, 0,
                                      ErrorResponse(Code::kResourceExhausted,
                                                    "too many requests in flight on this connection")));
          continue;
        }
        ++inflight->running;
      }
      std::thread([this, inflight, send, id, payload = std::move(ev.frame.payload), peer] {
        send(*inflight, EncodeFrame(id, kTypeResponse, 0, Dispatch(payload, peer)));
        std::lock_guard<std::mutex> l(inflight->mu);
        --inflight->running;
        inflight->cv.notify_all();
      }).detach();
    }
    if (inflight->broken) break;
  }
  {
    std::unique_lock<std::mutex> l(inflight->mu);
    inflight->cv.wait(l, [&] { return inflight->running == 0; });
  }

  // Off the list before the fd closes (when `conn` goes, after the lock), so
  // that Serve's shutdown never reaches an fd number reused meanwhile.
  std::lock_guard<std::mutex> l(mu_);
  auto it = conns_.find(fd);
  if (it != conns_.end()) {
    finished_.push_back(std::move(it->second));
    conns_.erase(it);
  }
}

Status Server::Serve(UniqueFd listen_fd) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoStatus(errno, "pipe");
  UniqueFd wake_r(p[0]), wake_w(p[1]);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return OkStatus();
    wake_r_ = std::move(wake_r);
    wake_w_ = std::move(wake_w);
  }
  for (;;) {
    pollfd fds[2] = {{listen_fd.get(), POLLIN, 0}, {wake_r_.get(), POLLIN, 0}};
    int r = ::poll(fds, 2, 1000);
    std::vector<std::jthread> done;  // joined as it goes
    bool stopping = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      done.swap(finished_);
      stopping = stopping_;
    }
    done.clear();
    if (stopping) break;
    if (r < 0 && errno != EINTR) return ErrnoStatus(errno, "poll");
    if (r <= 0 || !(fds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;
    ucred cred{};
    socklen_t len = sizeof(cred);
    Peer peer;
    if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer.pid = cred.pid;
      peer.uid = cred.uid;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (conns_.size() >= max_connections_) continue;  // closed here
    const int fd = conn.get();
    conns_[fd] =
        std::jthread([this, c = std::move(conn), peer]() mutable { ServeConnection(std::move(c), peer); });
  }
  // Shutting down: wake every connection thread and wait for it.
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [fd, t] : conns_) ::shutdown(fd, SHUT_RDWR);
  }
  for (;;) {
    std::vector<std::jthread> done;
    bool empty = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      done.swap(finished_);
      empty = conns_.empty();
    }
    done.clear();  // joins
    if (empty) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // A connection may have finished between the last swap and the check.
  std::vector<std::jthread> last;
  {
    std::lock_guard<std::mutex> l(mu_);
    last.swap(finished_);
  }
  return OkStatus();
}

void Server::Shutdown() {
  std::lock_guard<std::mutex> l(mu_);
  stopping_ = true;
  if (wake_w_) {
    char c = 1;
    ssize_t ignored = ::write(wake_w_.get(), &c, 1);
    (void)ignored;
  }
}

}  // namespace vmf::ttrpc
