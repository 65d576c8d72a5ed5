#include "ttrpc/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/io.h"
#include "ttrpc.pb.h"
#include "ttrpc/frame.h"

namespace vmf::ttrpc {

Status StatusFromWire(int code, const std::string& message) {
  if (code == 0) return OkStatus();
  if (code < 0 || code > 16) code = static_cast<int>(Code::kUnknown);
  // The message may come from the guest: keep what we log and show bounded.
  constexpr size_t kMaxMessage = 1024;
  if (message.size() > kMaxMessage) return {static_cast<Code>(code), message.substr(0, kMaxMessage) + "..."};
  return {static_cast<Code>(code), message};
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& socket_path, const Deadline& deadline) {
  VMF_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnixUntil(socket_path, deadline));
  return std::make_unique<Client>(std::move(fd));
}

Client::Client(UniqueFd fd, uint32_t first_stream_id) : fd_(std::move(fd)), next_id_(first_stream_id | 1u) {
  reader_ = std::thread([this] { ReadLoop(); });
}

Client::~Client() {
  Close();
  if (reader_.joinable()) reader_.join();
}

bool Client::connected() const {
  std::lock_guard<std::mutex> l(mu_);
  return !closed_;
}

void Client::Close() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!closed_) FailAllLocked(Unavailable("ttrpc connection closed by client"));
  }
  // Wakes the reader thread, which then exits.
  if (fd_) ::shutdown(fd_.get(), SHUT_RDWR);
}

void Client::FailAllLocked(const Status& st) {
  closed_ = true;
  close_reason_ = st;
  for (auto& [id, p] : pending_) {
    p->done = true;
    p->status = st;
  }
  pending_.clear();
  cv_.notify_all();
}

Result<std::string> Client::CallRaw(const std::string& service, const std::string& method,
                                    const std::string& payload, const Deadline& deadline,
                                    const Metadata& metadata) {
  const std::string what = service + "/" + method;
  ::ttrpc::Request req;
  req.set_service(service);
  req.set_method(method);
  req.set_payload(payload);
  auto left = deadline.when() - Clock::now();
  if (left.count() > 0) {
    req.set_timeout_nano(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count());
  }
  for (const auto& [k, v] : metadata) {
    auto* kv = req.add_metadata();
    kv->set_key(k);
    kv->set_value(v);
  }
  std::string body = req.SerializeAsString();
  if (body.size() > kMaxPayload) {
    return ResourceExhausted(what + ": request of " + std::to_string(body.size()) +
                             " bytes exceeds the 4 MiB ttrpc limit");
  }

  auto pending = std::make_shared<Pending>();
  uint32_t id = 0;
  Status wst;
  {
    // Ids are taken and sent under one lock: a server rejects a stream id
    // lower than one it has already seen.
    std::lock_guard<std::mutex> wl(write_mu_);
    {
      std::lock_guard<std::mutex> l(mu_);
      if (closed_) return close_reason_.WithContext(what);
      id = next_id_;
      next_id_ += 2;
      if (next_id_ < id) next_id_ = 1;  // wrapped after 2^31 calls
      pending_[id] = pending;
    }
    wst = WriteAll(fd_.get(), EncodeFrame(id, kTypeRequest, 0, body), deadline);
  }
  std::unique_lock<std::mutex> l(mu_);
  if (!wst.ok()) {
    pending_.erase(id);
    return wst.WithContext(what + ": sending request");
  }
  if (!cv_.wait_until(l, deadline.when(), [&] { return pending->done; })) {
    pending_.erase(id);
    return DeadlineExceeded(what + ": no reply before the deadline");
  }
  if (!pending->status.ok()) return pending->status.WithContext(what);
  return std::move(pending->payload);
}

Result<std::string> DecodeResponse(const DecodeEvent& ev) {
  if (ev.kind == DecodeEvent::kOversized) {
    return ResourceExhausted("reply of " + std::to_string(ev.declared_length) +
                             " bytes exceeds the 4 MiB ttrpc limit");
  }
  ::ttrpc::Response resp;
  if (!resp.ParseFromString(ev.frame.payload)) return DataLoss("malformed ttrpc response");
  if (resp.has_status() && resp.status().code() != 0) {
    return StatusFromWire(resp.status().code(), resp.status().message());
  }
  return std::move(*resp.mutable_payload());
}

void Client::ReadLoop() {
  FrameDecoder decoder;
  std::vector<DecodeEvent> events;
  char buf[65536];
  Status end = Unavailable("ttrpc connection closed by peer");
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd_.get(), POLLIN, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      end = ErrnoStatus(errno, "ttrpc read");
      break;
    }
    events.clear();
    decoder.Feed(std::string_view(buf, static_cast<size_t>(n)), &events);
    std::lock_guard<std::mutex> l(mu_);
    for (auto& ev : events) {
      auto it = pending_.find(ev.frame.stream_id);
      // Replies to streams we are not waiting on are stale or forged: dropped.
      if (it == pending_.end() || ev.frame.type != kTypeResponse) continue;
      Pending& p = *it->second;
      p.done = true;
      Result<std::string> reply = DecodeResponse(ev);
      if (reply.ok()) {
        p.payload = std::move(*reply);
      } else {
        p.status = reply.status();
      }
      pending_.erase(it);
    }
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> l(mu_);
  if (!closed_) FailAllLocked(end);
}

}  // namespace vmf::ttrpc
