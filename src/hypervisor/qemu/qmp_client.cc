#include "hypervisor/qemu/qmp_client.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <system_error>
#include <utility>

#include "common/io.h"

namespace vmf::qmp {
namespace {

using nlohmann::json;

// Compact JSON for messages and logs; never throws on odd strings.
std::string Dump(const json& j, size_t max = 200) {
  std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max) {
    s.resize(max);
    s += "...";
  }
  return s;
}

// A short, printable excerpt of raw bytes for error messages.
std::string Excerpt(std::string_view raw, size_t max = 80) {
  std::string s;
  for (char c : raw.substr(0, max)) {
    s += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (raw.size() > max) s += "...";
  return s;
}

// Deepest nesting of arrays/objects in a JSON text, ignoring brackets inside
// strings. Stops counting once past limit.
bool NestingWithin(std::string_view text, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

std::string StringMember(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  if (it == obj.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  return Dump(*it);
}

std::string Quoted(std::string_view command) { return "QMP command '" + std::string(command) + "'"; }

// Writes data with `pass_fd` attached (SCM_RIGHTS) to the first bytes sent.
Status SendWithFd(int sock, std::string_view data, int pass_fd, const Deadline& deadline) {
  for (;;) {
    iovec iov{const_cast<char*>(data.data()), data.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) return WriteAll(sock, data.substr(static_cast<size_t>(n)), deadline);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{sock, POLLOUT, 0};
      int r = ::poll(&p, 1, deadline.remaining_ms());
      if (r == 0) return DeadlineExceeded("timed out waiting to write");
      if (r < 0 && errno != EINTR) return ErrnoStatus(errno, "poll");
      continue;
    }
    return ErrnoStatus(n < 0 ? errno : EPIPE, "sendmsg with fd");
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// QmpStreamParser

QmpStreamParser::QmpStreamParser(size_t max_line) : max_line_(max_line) {}

void QmpStreamParser::Feed(std::string_view data, std::vector<Result<json>>* out) {
  auto too_long = [this] {
    return ResourceExhausted("QMP line longer than " + std::to_string(max_line_) + " bytes skipped");
  };
  while (!data.empty()) {
    size_t nl = data.find('\n');
    if (skipping_) {
      if (nl == std::string_view::npos) return;
      data.remove_prefix(nl + 1);
      skipping_ = false;
      continue;
    }
    // max_line_ + 1: a '\r' that is not part of the line may end the piece.
    std::string_view piece = data.substr(0, nl);  // all of data if there is no newline
    if (buf_.size() + piece.size() > max_line_ + 1) {
      out->push_back(too_long());
      buf_.clear();
      skipping_ = true;
      continue;  // drops bytes up to and including the next newline
    }
    if (nl == std::string_view::npos) {
      buf_.append(piece);
      return;
    }
    data.remove_prefix(nl + 1);
    if (buf_.empty()) {
      EmitLine(piece, out);
    } else {
      buf_.append(piece);
      EmitLine(buf_, out);
      buf_.clear();
    }
  }
}

void QmpStreamParser::EmitLine(std::string_view line, std::vector<Result<json>>* out) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_line_) {
    out->push_back(ResourceExhausted("QMP line longer than " + std::to_string(max_line_) + " bytes skipped"));
    return;
  }
  if (IsBlank(line)) return;
  if (!NestingWithin(line, kMaxDepth)) {
    out->push_back(
        DataLoss("QMP line nested deeper than " + std::to_string(kMaxDepth) + " levels: " + Excerpt(line)));
    return;
  }
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    out->push_back(DataLoss("unparsable QMP line: " + Excerpt(line)));
    return;
  }
  out->push_back(std::move(j));
}

// ---------------------------------------------------------------------------
// Routing

QmpMessageClass ClassifyQmpMessage(const json& msg) {
  QmpMessageClass c;
  if (!msg.is_object()) {
    c.kind = QmpMessageClass::kNotObject;
    return c;
  }
  auto ev = msg.find("event");
  if (ev != msg.end() && ev->is_string()) {
    c.kind = QmpMessageClass::kEvent;
    return c;
  }
  auto greeting = msg.find("QMP");
  if (greeting != msg.end()) {
    c.kind = greeting->is_object() ? QmpMessageClass::kGreeting : QmpMessageClass::kBadGreeting;
    return c;
  }
  c.is_error = msg.contains("error");
  if (!c.is_error && !msg.contains("return")) return c;  // kOther
  c.kind = QmpMessageClass::kReply;
  auto id = msg.find("id");
  c.has_id = id != msg.end();
  if (c.has_id && id->is_number_unsigned()) c.id = id->get<uint64_t>();
  return c;
}

// ---------------------------------------------------------------------------
// Errors

Status QmpErrorStatus(std::string_view command, const json& error) {
  std::string cls = StringMember(error, "class");
  std::string desc = StringMember(error, "desc");
  if (cls.empty()) cls = "(no class)";
  if (desc.empty() && !error.is_object()) desc = Dump(error);
  Code code = Code::kUnknown;
  if (cls == "DeviceNotFound") {
    code = Code::kNotFound;
  } else if (cls == "CommandNotFound") {
    code = Code::kUnimplemented;
  } else if (cls == "DeviceNotActive" || cls == "KVMMissingCap") {
    code = Code::kFailedPrecondition;
  }
  return Status(code, Quoted(command) + " failed: " + cls + ": " + desc);
}

// ---------------------------------------------------------------------------
// QmpClient

QmpClient::QmpClient(UniqueFd fd, const Options& options) : fd_(std::move(fd)), options_(options) {}

QmpClient::~QmpClient() {
  Close();
  if (reader_.joinable()) reader_.join();
}

spdlog::logger& QmpClient::log() const {
  return options_.logger ? *options_.logger : *spdlog::default_logger_raw();
}

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      const Deadline& deadline) {
  return Connect(socket_path, deadline, Options());
}

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      const Deadline& deadline, const Options& options) {
  auto fd = ConnectUnixUntil(socket_path, deadline);
  if (!fd.ok()) return fd.status().WithContext("QMP socket " + socket_path);
  auto client = FromFd(std::move(fd).value(), deadline, options);
  if (!client.ok()) return client.status().WithContext("QMP socket " + socket_path);
  return client;
}

Result<std::unique_ptr<QmpClient>> QmpClient::FromFd(UniqueFd fd, const Deadline& deadline) {
  return FromFd(std::move(fd), deadline, Options());
}

Result<std::unique_ptr<QmpClient>> QmpClient::FromFd(UniqueFd fd, const Deadline& deadline,
                                                     const Options& options) {
  if (!fd.valid()) return InvalidArgument("QMP: invalid fd");
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(fd), options));
  try {
    client->reader_ = std::thread(&QmpClient::ReadLoop, client.get());
  } catch (const std::system_error& e) {
    return Internal(std::string("QMP: cannot start the reader thread: ") + e.what());
  }
  VMF_RETURN_IF_ERROR(client->Handshake(deadline));
  return client;
}

Status QmpClient::Handshake(const Deadline& deadline) {
  {
    std::unique_lock lk(mu_);
    if (!greeting_cv_.wait_until(lk, deadline.when(), [&] { return greeting_status_.has_value(); })) {
      return DeadlineExceeded("no QMP greeting from QEMU before the deadline");
    }
    if (!greeting_status_->ok()) return *greeting_status_;
  }
  auto r = Execute("qmp_capabilities", nullptr, deadline);
  if (!r.ok()) return r.status().WithContext("QMP handshake");
  return OkStatus();
}

bool QmpClient::connected() const {
  std::lock_guard lk(mu_);
  return !closed_;
}

void QmpClient::Close() {
  {
    std::lock_guard lk(mu_);
    if (!closed_) {
      closed_ = true;
      close_reason_ = Unavailable("QMP connection closed by the client");
      FailAllLocked(close_reason_);
    }
    if (!greeting_status_) greeting_status_ = close_reason_;
  }
  reply_cv_.notify_all();
  event_cv_.notify_all();
  greeting_cv_.notify_all();
  write_cv_.notify_all();
  // Wakes the reader thread (it sees EOF); the fd itself is closed only in
  // the destructor, after the reader has been joined.
  ::shutdown(fd_.get(), SHUT_RDWR);
}

void QmpClient::FailAllLocked(const Status& st) {
  for (auto& [id, p] : pending_) {
    p->result = Status(st.code(), Quoted(p->command) + ": " + st.message());
  }
  pending_.clear();
}

Result<json> QmpClient::Execute(const std::string& command, const json& arguments, const Deadline& deadline) {
  return Run(command, arguments, -1, deadline);
}

Result<json> QmpClient::ExecuteWithFd(const std::string& command, const json& arguments, int fd,
                                      const Deadline& deadline) {
  if (fd < 0) return InvalidArgument(Quoted(command) + ": no fd to pass");
  return Run(command, arguments, fd, deadline);
}

Result<json> QmpClient::Run(const std::string& command, const json& arguments, int pass_fd,
                            const Deadline& deadline) {
  if (!arguments.is_null() && !arguments.is_object()) {
    return InvalidArgument(Quoted(command) + ": arguments must be a JSON object, not " + Dump(arguments, 60));
  }
  auto pending = std::make_shared<Pending>();
  pending->command = command;
  uint64_t id = 0;
  {
    std::lock_guard lk(mu_);
    if (closed_) return Status(close_reason_.code(), Quoted(command) + ": " + close_reason_.message());
    id = next_id_++;
    pending_[id] = pending;
  }
  json request = {{"execute", command}, {"id", id}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  std::string line = request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";

  Status written;
  {
    // Writers queue here, each bounded by its own deadline.
    std::unique_lock lk(mu_);
    if (!write_cv_.wait_until(lk, deadline.when(), [&] { return !writing_ || closed_; })) {
      pending_.erase(id);
      return DeadlineExceeded(Quoted(command) +
                              ": timed out waiting to send (another command is stuck sending)");
    }
    if (closed_) {
      pending_.erase(id);  // already failed by FailAllLocked, if it was still there
      return Status(close_reason_.code(), Quoted(command) + ": " + close_reason_.message());
    }
    writing_ = true;
  }
  written =
      pass_fd >= 0 ? SendWithFd(fd_.get(), line, pass_fd, deadline) : WriteAll(fd_.get(), line, deadline);
  {
    std::lock_guard lk(mu_);
    writing_ = false;
  }
  write_cv_.notify_one();
  if (!written.ok()) {
    // Part of the command may be on the wire; nothing sent after it would be
    // understood, so the connection is done for.
    bool timed_out = written.code() == Code::kDeadlineExceeded;
    Status reason = Unavailable(timed_out ? "QMP connection closed: a command could not be sent in time"
                                          : "QMP connection closed: " + written.message());
    {
      std::lock_guard lk(mu_);
      pending_.erase(id);
      if (!closed_) {
        closed_ = true;
        close_reason_ = reason;
        FailAllLocked(reason);
      }
    }
    reply_cv_.notify_all();
    event_cv_.notify_all();
    write_cv_.notify_all();
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (timed_out) {
      return DeadlineExceeded(Quoted(command) + ": timed out sending it; QMP connection closed");
    }
    return Status(reason.code(), Quoted(command) + ": " + reason.message());
  }

  std::unique_lock lk(mu_);
  if (!reply_cv_.wait_until(lk, deadline.when(), [&] { return pending->result.has_value(); })) {
    pending_.erase(id);
    return DeadlineExceeded(Quoted(command) + ": no reply before the deadline");
  }
  return std::move(*pending->result);
}

Result<json> QmpClient::WaitEvent(const std::string& name, const Deadline& deadline) {
  std::unique_lock lk(mu_);
  for (;;) {
    auto it = std::find_if(events_.begin(), events_.end(), [&](const json& e) { return e["event"] == name; });
    if (it != events_.end()) {
      json e = std::move(*it);
      events_.erase(it);
      return e;
    }
    if (closed_) {
      return Status(close_reason_.code(), "waiting for QMP event " + name + ": " + close_reason_.message());
    }
    if (Clock::now() >= deadline.when()) {
      return DeadlineExceeded("no QMP event " + name + " before the deadline");
    }
    event_cv_.wait_until(lk, deadline.when());
  }
}

std::vector<json> QmpClient::TakeEvents() {
  std::lock_guard lk(mu_);
  std::vector<json> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

void QmpClient::ReadLoop() {
  Status end = Unavailable("QMP connection closed");
  try {
    QmpStreamParser parser(options_.max_line);
    std::vector<Result<json>> messages;
    std::string buf(64 * 1024, '\0');
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {  // a non-blocking fd was handed in
          pollfd p{fd_.get(), POLLIN, 0};
          ::poll(&p, 1, -1);  // Close() shuts the socket down, which wakes this
          continue;
        }
        end = Unavailable(std::string("QMP connection closed: read: ") + std::strerror(errno));
        break;
      }
      messages.clear();
      parser.Feed(std::string_view(buf.data(), static_cast<size_t>(n)), &messages);
      for (auto& m : messages) {
        if (m.ok()) {
          Dispatch(std::move(m).value());
          continue;
        }
        log().warn("QMP: {}", m.status().message());
        bool notify = false;
        {
          std::lock_guard lk(mu_);
          if (!greeting_status_) {
            greeting_status_ = DataLoss("bad QMP greeting: " + m.status().message());
            notify = true;
          }
        }
        if (notify) greeting_cv_.notify_all();
      }
    }
  } catch (const std::exception& e) {
    end = Unavailable(std::string("QMP connection closed: reader failed: ") + e.what());
  }
  {
    std::lock_guard lk(mu_);
    if (!closed_) {
      closed_ = true;
      close_reason_ = end;
      FailAllLocked(end);
    }
    if (!greeting_status_) greeting_status_ = Unavailable("QMP connection closed before the greeting");
  }
  reply_cv_.notify_all();
  event_cv_.notify_all();
  greeting_cv_.notify_all();
  write_cv_.notify_all();
}

void QmpClient::Dispatch(json msg) {
  const QmpMessageClass c = ClassifyQmpMessage(msg);
  if (c.kind == QmpMessageClass::kNotObject) {
    log().warn("QMP: ignoring a message that is not an object: {}", Dump(msg));
    return;
  }
  if (c.kind == QmpMessageClass::kEvent) {
    {
      std::lock_guard lk(mu_);
      events_.push_back(std::move(msg));
      if (events_.size() > kMaxEvents) {
        events_.pop_front();
        if (events_dropped_++ % 1000 == 0) {
          log().warn("QMP: event queue full ({}), dropped the oldest ({} dropped so far)", kMaxEvents,
                     events_dropped_);
        }
      }
    }
    event_cv_.notify_all();
    return;
  }
  if (c.kind == QmpMessageClass::kGreeting || c.kind == QmpMessageClass::kBadGreeting) {
    bool notify = false;
    {
      std::lock_guard lk(mu_);
      if (!greeting_status_) {
        if (c.kind == QmpMessageClass::kGreeting) {
          greeting_ = std::move(msg["QMP"]);
          greeting_status_ = OkStatus();
        } else {
          greeting_status_ = DataLoss("bad QMP greeting: " + Dump(msg));
        }
        notify = true;
      }
    }
    if (notify) greeting_cv_.notify_all();
    return;
  }
  {
    std::unique_lock lk(mu_);
    if (!greeting_status_) {
      greeting_status_ = DataLoss("expected the QMP greeting, got: " + Dump(msg));
      lk.unlock();
      greeting_cv_.notify_all();
      return;
    }
  }
  if (c.kind == QmpMessageClass::kReply) {
    DispatchReply(std::move(msg), c);
    return;
  }
  log().debug("QMP: ignoring {}", Dump(msg));
}

void QmpClient::DispatchReply(json msg, const QmpMessageClass& c) {
  std::unique_lock lk(mu_);
  if (!c.has_id) {
    if (!c.is_error) {
      log().warn("QMP: dropping a reply without id: {}", Dump(msg));
      return;
    }
    // QEMU answers input it could not parse with an id-less error. Which
    // command caused it is only certain when exactly one is in flight.
    if (pending_.size() != 1) {
      log().warn("QMP: error without id with {} commands pending: {}", pending_.size(), Dump(msg));
      return;
    }
    auto it = pending_.begin();
    log().warn("QMP: error without id, failing the only pending command '{}': {}", it->second->command,
               Dump(msg));
    Status st = QmpErrorStatus(it->second->command, msg["error"]);
    it->second->result = Status(st.code(), st.message() + " (error reply without id)");
    pending_.erase(it);
  } else {
    if (!c.id) {
      log().warn("QMP: dropping a reply with a foreign id: {}", Dump(msg));
      return;
    }
    auto it = pending_.find(*c.id);
    if (it == pending_.end()) {
      log().warn("QMP: dropping a reply to no pending command (late or unknown): {}", Dump(msg));
      return;
    }
    if (c.is_error) {
      it->second->result = QmpErrorStatus(it->second->command, msg["error"]);
    } else {
      it->second->result = std::move(msg["return"]);
    }
    pending_.erase(it);
  }
  lk.unlock();
  reply_cv_.notify_all();
}

}  // namespace vmf::qmp
