#include "proxy/proxy.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <asio.hpp>
#include <map>
#include <memory>
#include <optional>
#include <type_traits>
#include <variant>

#include "common/io.h"
#include "proxy/agent_session.h"
#include "proxy/bounded_writer.h"
#include "proxy/console_reader.h"
#include "ttrpc/frame.h"
#include "ttrpc/wire.h"

namespace vmf {
namespace {

using asio::local::stream_protocol;
using ttrpc::DecodeEvent;
using ttrpc::EncodeFrame;
using ttrpc::ErrorResponse;
using ttrpc::FrameDecoder;

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxQueuedBytes = 64u << 20;  // per connection, outbound
// A quarantined channel is only read to notice QEMU's exit, and slowly, so
// that a guest flooding it stalls instead of costing the host CPU.
constexpr auto kQuarantineReadPause = std::chrono::milliseconds(100);

class ProxyServer;

class ClientConn : public std::enable_shared_from_this<ClientConn> {
 public:
  ClientConn(ProxyServer* server, stream_protocol::socket sock, uint64_t id)
      : server_(server), sock_(std::move(sock)), writer_(&sock_, kMaxQueuedBytes), id_(id) {}
  void Start();
  void Send(std::string frame);
  void Close();
  uint64_t id() const { return id_; }
  // Everything sent has been written (or the client is gone).
  bool drained() const { return closed_ || writer_.idle(); }

 private:
  void Read();
  void OnFrame(DecodeEvent& ev);
  ProxyServer* server_;
  stream_protocol::socket sock_;
  BoundedWriter writer_;
  uint64_t id_;
  FrameDecoder decoder_;
  bool closed_ = false;
  char buf_[kReadChunk];
};

// The sockets and timers around an AgentSession, which makes every decision
// about the agent channel: this class carries out the actions it returns.
class ProxyServer {
 public:
  ProxyServer(asio::io_context& io, const ProxyOptions& opts, std::shared_ptr<spdlog::logger> log,
              std::shared_ptr<spdlog::logger> console)
      : io_(io),
        opts_(opts),
        log_(std::move(log)),
        acceptor_(io),
        agent_(io),
        agent_writer_(&agent_, kMaxQueuedBytes),
        connect_timer_(io),
        session_timer_(io),
        drain_timer_(io),
        stop_timer_(io),
        signals_(io, SIGTERM, SIGINT),
        connect_deadline_(opts.connect_timeout),
        session_(SessionOptions(opts)) {
    agent_writer_.on_error = [this](std::error_code ec) { Shutdown("agent channel write: " + ec.message()); };
    if (!opts_.console_socket.empty()) {
      console_.emplace(io, opts_.console_socket, connect_deadline_, log_, std::move(console));
    }
  }

  Status Listen(UniqueFd listen_fd) {
    std::error_code ec;
    acceptor_.assign(stream_protocol(), listen_fd.release(), ec);
    if (ec) return Internal("proxy acceptor: " + ec.message());
    return OkStatus();
  }

  void Start() {
    signals_.async_wait([this](std::error_code ec, int sig) {
      if (!ec) Shutdown("signal " + std::to_string(sig));
    });
    Accept();
    ConnectAgent();
    if (console_) console_->Start();
  }

  // Called by clients.
  void Forward(uint64_t client, uint32_t client_stream, uint8_t type, uint8_t flags,
               const std::string& payload) {
    Do(session_.OnClientRequest(client, client_stream, type, flags, payload));
  }
  void ClientGone(uint64_t id) {
    Do(session_.OnClientGone(id));
    clients_.erase(id);
  }
  spdlog::logger& log() { return *log_; }

  void Shutdown(const std::string& why) {
    if (stopping_) return;
    stopping_ = true;
    log_->info("proxy stopping: {}", why);
    if (quarantine_dropped_ > 0)
      log_->info("ignored {} bytes from the quarantined agent", quarantine_dropped_);
    Do(session_.OnShutdown(why));
    std::error_code ec;
    acceptor_.close(ec);
    connect_timer_.cancel();
    session_timer_.cancel();
    drain_timer_.cancel();
    if (console_) console_->Stop();
    signals_.cancel();
    agent_.close(ec);
    // Give queued error replies up to 100 ms to reach clients, then stop
    // (at once when every reply is out: a VM's stop waits for us).
    StopWhenDrained(std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
  }

  void StopWhenDrained(std::chrono::steady_clock::time_point give_up) {
    const bool drained =
        std::all_of(clients_.begin(), clients_.end(), [](const auto& e) { return e.second->drained(); });
    if (drained || std::chrono::steady_clock::now() >= give_up) {
      if (console_) console_->Close();
      for (auto& [id, c] : std::map(clients_)) c->Close();
      io_.stop();
      return;
    }
    stop_timer_.expires_after(std::chrono::milliseconds(2));
    stop_timer_.async_wait([this, give_up](std::error_code) { StopWhenDrained(give_up); });
  }

 private:
  static AgentSessionOptions SessionOptions(const ProxyOptions& opts) {
    AgentSessionOptions o;
    o.frame_timeout = opts.frame_timeout;
    return o;
  }

  // Carries out the session's actions in order, then arms its timer.
  void Do(AgentSession::Actions actions) {
    for (auto& action : actions) {
      std::visit(
          [this](auto& a) {
            using T = std::decay_t<decltype(a)>;
            if constexpr (std::is_same_v<T, AgentSession::SendToAgent>) {
              if (!stopping_ && !agent_writer_.Send(std::move(a.bytes)))
                Shutdown("agent channel queue overflow");
            } else if constexpr (std::is_same_v<T, AgentSession::ReplyToClient>) {
              auto it = clients_.find(a.client);
              if (it == clients_.end()) return;
              std::shared_ptr<ClientConn> client = it->second;  // Send may close it: keep it alive
              client->Send(std::move(a.frame));
            } else {
              Log(a);
            }
          },
          action);
    }
    ArmSessionTimer();
  }

  void Log(const AgentSession::Notice& n) {
    switch (n.kind) {
      case AgentSession::Notice::kSynced:
      case AgentSession::Notice::kLateReplyDropped:
        log_->debug("{}", n.message);
        break;
      case AgentSession::Notice::kResynced:
        log_->warn("{}", n.message);
        break;
      case AgentSession::Notice::kQuarantined:
        log_->error("{}", n.message);
        break;
    }
  }

  // One timer for the session: armed at its next due time, or earlier (the
  // session ignores an early call, and the timer is then armed again).
  void ArmSessionTimer() {
    if (stopping_) return;
    std::optional<Clock::time_point> due = session_.NextTimer();
    if (!due) {
      if (timer_armed_) session_timer_.cancel();
      timer_armed_ = false;
      return;
    }
    if (timer_armed_ && timer_due_ <= *due) return;
    timer_armed_ = true;
    timer_due_ = *due;
    session_timer_.expires_at(*due);
    session_timer_.async_wait([this](std::error_code ec) {
      if (ec || stopping_) return;
      timer_armed_ = false;
      Do(session_.OnTimer(Clock::now()));
    });
  }

  void Accept() {
    acceptor_.async_accept([this](std::error_code ec, stream_protocol::socket sock) {
      if (ec) {
        if (ec != asio::error::operation_aborted) log_->warn("accept: {}", ec.message());
        if (!stopping_) Accept();
        return;
      }
      auto c = std::make_shared<ClientConn>(this, std::move(sock), ++next_client_id_);
      clients_[c->id()] = c;
      c->Start();
      Accept();
    });
  }

  void ConnectAgent() {
    agent_.async_connect(stream_protocol::endpoint(opts_.agent_socket), [this](std::error_code ec) {
      if (stopping_) return;
      if (ec) {
        agent_ = stream_protocol::socket(io_);
        if (connect_deadline_.expired()) {
          Shutdown("cannot connect to the agent channel " + opts_.agent_socket + ": " + ec.message());
          return;
        }
        connect_timer_.expires_after(std::chrono::milliseconds(5));
        connect_timer_.async_wait([this](std::error_code e) {
          if (!e) ConnectAgent();
        });
        return;
      }
      log_->debug("connected to agent channel");
      Do(session_.OnConnected(Clock::now()));
      ReadAgent();
    });
  }

  void ReadAgent() {
    agent_.async_read_some(asio::buffer(agent_buf_), [this](std::error_code ec, size_t n) {
      if (stopping_) return;
      if (ec) {
        Shutdown(ec == asio::error::eof ? "agent channel closed (VM stopped)"
                                        : "agent channel: " + ec.message());
        return;
      }
      if (session_.quarantined()) {
        quarantine_dropped_ += n;
        drain_timer_.expires_after(kQuarantineReadPause);
        drain_timer_.async_wait([this](std::error_code e) {
          if (!e && !stopping_) ReadAgent();
        });
        return;
      }
      Do(session_.OnAgentBytes(std::string_view(agent_buf_, n), Clock::now()));
      if (!stopping_) ReadAgent();
    });
  }

  asio::io_context& io_;
  const ProxyOptions& opts_;
  std::shared_ptr<spdlog::logger> log_;
  stream_protocol::acceptor acceptor_;
  stream_protocol::socket agent_;
  BoundedWriter agent_writer_;
  asio::steady_timer connect_timer_;
  asio::steady_timer session_timer_;
  asio::steady_timer drain_timer_;
  asio::steady_timer stop_timer_;
  asio::signal_set signals_;
  Deadline connect_deadline_;
  std::optional<ConsoleReader> console_;
  bool stopping_ = false;

  AgentSession session_;
  bool timer_armed_ = false;
  Clock::time_point timer_due_{};
  char agent_buf_[kReadChunk];
  uint64_t quarantine_dropped_ = 0;

  uint64_t next_client_id_ = 0;
  std::map<uint64_t, std::shared_ptr<ClientConn>> clients_;
};

void ClientConn::Start() {
  writer_.hold = [this] { return std::shared_ptr<void>(shared_from_this()); };
  writer_.on_error = [self = weak_from_this()](std::error_code) {
    if (auto s = self.lock()) s->Close();
  };
  Read();
}

void ClientConn::Send(std::string frame) {
  if (closed_) return;
  if (!writer_.Send(std::move(frame))) {
    server_->log().warn("client {} does not read its replies; disconnecting it", id_);
    Close();
  }
}

void ClientConn::Close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ec;
  sock_.close(ec);
  server_->ClientGone(id_);
}

void ClientConn::Read() {
  sock_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](std::error_code ec, size_t n) {
    if (ec) {
      self->Close();
      return;
    }
    std::vector<DecodeEvent> events;
    self->decoder_.Feed(std::string_view(self->buf_, n), &events);
    for (auto& ev : events) {
      if (self->closed_) return;
      self->OnFrame(ev);
    }
    if (!self->closed_) self->Read();
  });
}

void ClientConn::OnFrame(DecodeEvent& ev) {
  uint32_t sid = ev.frame.stream_id;
  if (ev.kind == DecodeEvent::kOversized) {
    Send(EncodeFrame(
        sid, ttrpc::kTypeResponse, 0,
        ErrorResponse(Code::kResourceExhausted, "request of " + std::to_string(ev.declared_length) +
                                                    " bytes exceeds the 4 MiB ttrpc limit")));
    return;
  }
  // The session checks stream ids and limits, and routes the request.
  server_->Forward(id_, sid, ev.frame.type, ev.frame.flags, ev.frame.payload);
}

}  // namespace

Status RunProxy(const ProxyOptions& opts) {
  std::vector<spdlog::sink_ptr> sinks;
  if (opts.log_file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  } else {
    try {
      // Bounded: a guest flooding its console costs at most 2 MiB on disk
      // (and ReadConsole takes at most 16 KiB/s of it).
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(opts.log_file, 1 << 20, 1));
    } catch (const spdlog::spdlog_ex& e) {
      return Internal(std::string("proxy log ") + opts.log_file + ": " + e.what());
    }
  }
  auto log = std::make_shared<spdlog::logger>("proxy", sinks.begin(), sinks.end());
  auto console = std::make_shared<spdlog::logger>("console", sinks.begin(), sinks.end());
  for (auto* l : {log.get(), console.get()}) {
    l->set_pattern("%Y-%m-%dT%H:%M:%S.%e [%n] vm=" + opts.vm_id + " %v");
    l->flush_on(spdlog::level::info);
  }
  console->flush_on(spdlog::level::off);  // flushed once per read of the console instead
  if (std::getenv("VMF_PROXY_DEBUG")) log->set_level(spdlog::level::debug);

  VMF_ASSIGN_OR_RETURN(UniqueFd listen_fd, ListenUnix(opts.listen_socket));
  asio::io_context io;
  ProxyServer server(io, opts, log, console);
  VMF_RETURN_IF_ERROR(server.Listen(std::move(listen_fd)));
  if (opts.ready_fd >= 0) {
    (void)WriteAll(opts.ready_fd, "ready\n", Deadline(std::chrono::seconds(1)));
    ::close(opts.ready_fd);
  }
  server.Start();
  io.run();
  ::unlink(opts.listen_socket.c_str());
  return OkStatus();
}

}  // namespace vmf
