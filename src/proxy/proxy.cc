#include "proxy/proxy.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio.hpp>
#include <deque>
#include <map>
#include <memory>
#include <random>

#include "common/io.h"
#include "health.pb.h"
#include "ttrpc.pb.h"
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
constexpr size_t kMaxPendingPerClient = 4096;  // requests in flight per client
constexpr size_t kMaxConsoleLine = 4096;
// Bytes accepted from the agent channel before the reply to the sync request:
// stale bytes of an earlier session are far fewer (one frame at most, in
// practice nothing); an agent that sends more is not answering the sync.
constexpr size_t kMaxPresyncBytes = 8u << 20;
constexpr auto kSyncRetry = std::chrono::milliseconds(1500);
// A quarantined channel is only read to notice QEMU's exit, and slowly, so
// that a guest flooding it stalls instead of costing the host CPU.
constexpr auto kQuarantineReadPause = std::chrono::milliseconds(100);
// The guest console: read at most every 5 ms and at most 16 KiB/s (after a
// burst of 128 KiB), about a 160 kbaud serial port; see ReadConsole.
constexpr auto kConsoleReadPause = std::chrono::milliseconds(5);
constexpr size_t kConsoleRate = 16 * 1024;
constexpr size_t kConsoleBurst = 128 * 1024;

// A socket with a bounded queue of outgoing buffers, written one at a time.
class Writer {
 public:
  explicit Writer(stream_protocol::socket* sock) : sock_(sock) {}
  // False if the queue would exceed its bound (the caller drops the peer).
  bool Send(std::string data) {
    if (queued_ + data.size() > kMaxQueuedBytes) return false;
    queued_ += data.size();
    q_.push_back(std::move(data));
    if (!writing_) Next();
    return true;
  }
  std::function<void(std::error_code)> on_error;
  // Returns an owner to keep alive while a write is in flight.
  std::function<std::shared_ptr<void>()> hold = [] { return std::shared_ptr<void>(); };

 private:
  void Next() {
    if (q_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(*sock_, asio::buffer(q_.front()), [this, keep = hold()](std::error_code ec, size_t n) {
      if (ec) {
        writing_ = false;
        q_.clear();
        queued_ = 0;
        if (on_error) on_error(ec);
        return;
      }
      queued_ -= n;
      q_.pop_front();
      Next();
    });
  }
  stream_protocol::socket* sock_;
  std::deque<std::string> q_;
  size_t queued_ = 0;
  bool writing_ = false;
};

class ProxyServer;

class ClientConn : public std::enable_shared_from_this<ClientConn> {
 public:
  ClientConn(ProxyServer* server, stream_protocol::socket sock, uint64_t id)
      : server_(server), sock_(std::move(sock)), writer_(&sock_), id_(id) {}
  void Start();
  void Reply(uint32_t stream_id, const std::string& response_payload) {
    Send(EncodeFrame(stream_id, ttrpc::kTypeResponse, 0, response_payload));
  }
  void Send(std::string frame);
  void Close();
  uint64_t id() const { return id_; }
  size_t in_flight = 0;

 private:
  void Read();
  void OnFrame(DecodeEvent& ev);
  ProxyServer* server_;
  stream_protocol::socket sock_;
  Writer writer_;
  uint64_t id_;
  FrameDecoder decoder_;
  ttrpc::StreamIdRule stream_ids_;
  bool closed_ = false;
  char buf_[kReadChunk];
};

class ProxyServer {
 public:
  ProxyServer(asio::io_context& io, const ProxyOptions& opts, std::shared_ptr<spdlog::logger> log,
              std::shared_ptr<spdlog::logger> console)
      : io_(io),
        opts_(opts),
        log_(std::move(log)),
        console_log_(std::move(console)),
        acceptor_(io),
        agent_(io),
        agent_writer_(&agent_),
        console_(io),
        connect_timer_(io),
        sync_timer_(io),
        frame_timer_(io),
        drain_timer_(io),
        console_timer_(io),
        signals_(io, SIGTERM, SIGINT),
        connect_deadline_(opts.connect_timeout) {
    agent_writer_.on_error = [this](std::error_code ec) { Shutdown("agent channel write: " + ec.message()); };
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
    if (!opts_.console_socket.empty()) ConnectConsole();
  }

  // Called by clients.
  void Forward(const std::shared_ptr<ClientConn>& client, uint32_t client_stream, uint8_t type, uint8_t flags,
               std::string payload) {
    if (quarantined_) {
      client->Reply(client_stream, ErrorResponse(Code::kDataLoss, quarantine_message_));
      return;
    }
    uint32_t chan = next_chan_id_;
    next_chan_id_ += 2;
    if (next_chan_id_ >= 0x7fffffffu) {
      next_chan_id_ = 1;  // the agent accepts a new sync baseline
      chan_wrapped_ = true;
    }
    routes_[chan] = Route{client, client_stream};
    client->in_flight++;
    std::string frame = EncodeFrame(chan, type, flags, payload);
    if (synced_) {
      if (!agent_writer_.Send(std::move(frame))) Shutdown("agent channel queue overflow");
    } else if (presync_bytes_ + frame.size() > kMaxQueuedBytes) {
      routes_.erase(chan);
      client->in_flight--;
      client->Reply(client_stream, ErrorResponse(Code::kResourceExhausted,
                                                 "too many requests queued before the agent answered"));
    } else {
      presync_bytes_ += frame.size();
      presync_.push_back(std::move(frame));
    }
  }
  void ClientGone(uint64_t id) {
    for (auto it = routes_.begin(); it != routes_.end();) {
      auto c = it->second.client.lock();
      if (!c || c->id() == id) {
        it = routes_.erase(it);
      } else {
        ++it;
      }
    }
    clients_.erase(id);
  }
  spdlog::logger& log() { return *log_; }

 private:
  struct Route {
    std::weak_ptr<ClientConn> client;
    uint32_t client_stream;
  };

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
      StartSession();
      ReadAgent();
    });
  }

  // A new session on the channel: a fresh random sync id, and every byte
  // until its reply is stale.
  void StartSession() {
    std::random_device rd;
    uint32_t id;
    do {
      id = (rd() % 0x3fffffffu) | 1u;
    } while (id == sync_id_);
    sync_id_ = id;
    next_chan_id_ = sync_id_ + 2;
    first_chan_id_ = next_chan_id_;
    chan_wrapped_ = false;
    synced_ = false;
    syncs_sent_ = 0;
    sync_replies_ = 0;
    scan_.clear();
    presync_skipped_ = 0;
    agent_decoder_ = FrameDecoder();  // frees a partial frame of up to 4 MiB
    SendSync();
  }

  void SendSync() {
    if (synced_ || stopping_ || quarantined_) return;
    if (!agent_writer_.Send(SyncRequestFrame(sync_id_))) {
      Shutdown("agent channel queue overflow");
      return;
    }
    ++syncs_sent_;
    sync_timer_.expires_after(kSyncRetry);
    sync_timer_.async_wait([this](std::error_code ec) {
      if (!ec) SendSync();
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
      if (quarantined_) {
        quarantine_dropped_ += n;
        drain_timer_.expires_after(kQuarantineReadPause);
        drain_timer_.async_wait([this](std::error_code e) {
          if (!e && !stopping_) ReadAgent();
        });
        return;
      }
      OnAgentBytes(std::string_view(agent_buf_, n));
      ReadAgent();
    });
  }

  void OnAgentBytes(std::string_view data) {
    last_agent_rx_ = Clock::now();
    if (!synced_) {
      data = ScanForSync(data);
      if (!synced_ || quarantined_) return;
    }
    events_.clear();
    agent_decoder_.Feed(data, &events_);
    scan_.clear();  // what ScanForSync handed over has been decoded
    for (auto& ev : events_) {
      OnAgentFrame(ev);
      if (quarantined_ || stopping_) return;
    }
    if (agent_decoder_.mid_frame()) ArmFrameTimer();
  }

  // Before the sync reply is seen, bytes are stale: look for the header of
  // a response on the sync stream and start decoding there.
  std::string_view ScanForSync(std::string_view data) {
    scan_.append(data);
    for (size_t k = 0; k + ttrpc::kHeaderSize <= scan_.size(); ++k) {
      const char* h = scan_.data() + k;
      if (ttrpc::LoadBE32(h + 4) == sync_id_ && static_cast<uint8_t>(h[8]) == ttrpc::kTypeResponse &&
          ttrpc::LoadBE32(h) <= 4096) {
        synced_ = true;
        sync_timer_.cancel();
        log_->debug("agent channel synchronised (skipped {} stale bytes)", presync_skipped_ + k);
        scan_.erase(0, k);
        for (auto& f : presync_) {
          if (!agent_writer_.Send(std::move(f))) Shutdown("agent channel queue overflow");
        }
        presync_.clear();
        presync_bytes_ = 0;
        return scan_;
      }
    }
    // Keep only what may be the start of a header split across two reads.
    if (scan_.size() >= ttrpc::kHeaderSize) {
      size_t drop = scan_.size() - (ttrpc::kHeaderSize - 1);
      presync_skipped_ += drop;
      scan_.erase(0, drop);
    }
    if (presync_skipped_ > kMaxPresyncBytes) {
      Quarantine("the agent sent " + std::to_string(presync_skipped_) +
                 " bytes without answering the sync request (garbage, or not a vmfactory agent)");
    }
    return {};
  }

  // Whether this proxy ever sent a request with this channel stream id.
  bool Issued(uint32_t id) const {
    if (id % 2 == 0) return false;
    if (chan_wrapped_) return id >= first_chan_id_ || id < next_chan_id_;
    return id >= first_chan_id_ && id < next_chan_id_;
  }

  // Every frame from the agent must be a well-formed response for a stream
  // this proxy opened: anything else is a protocol violation, which
  // quarantines the channel (the stream can no longer be trusted).
  void OnAgentFrame(DecodeEvent& ev) {
    const uint32_t id = ev.frame.stream_id;
    const std::string on_stream = " on stream " + std::to_string(id);
    if (ev.kind == DecodeEvent::kOversized) {
      Quarantine("a reply of " + std::to_string(ev.declared_length) + " bytes" + on_stream +
                     " exceeds the 4 MiB ttrpc limit",
                 id, Code::kResourceExhausted);
      return;
    }
    if (ev.frame.type != ttrpc::kTypeResponse) {
      Quarantine("a frame of type " + std::to_string(ev.frame.type) + on_stream +
                 " (the agent may only send responses)");
      return;
    }
    ::ttrpc::Response resp;
    if (!resp.ParseFromString(ev.frame.payload)) {
      Quarantine("the reply" + on_stream + " is not a ttrpc.Response (" +
                     std::to_string(ev.frame.payload.size()) + " bytes of garbage)",
                 id);
      return;
    }
    if (id == sync_id_) {  // the sync reply, and replies to its retries
      if (++sync_replies_ > syncs_sent_) {
        Quarantine(std::to_string(sync_replies_) + " replies to " + std::to_string(syncs_sent_) +
                   " sync requests");
      }
      return;
    }
    auto it = routes_.find(id);
    if (it == routes_.end()) {
      if (!Issued(id)) {
        Quarantine("a reply for stream " + std::to_string(id) + ", which was never opened");
        return;
      }
      log_->debug("dropping a late reply for stream {} (its client is gone)", id);
      return;
    }
    auto client = it->second.client.lock();
    uint32_t cs = it->second.client_stream;
    routes_.erase(it);
    if (!client) return;
    client->in_flight--;
    client->Send(EncodeFrame(cs, ev.frame.type, ev.frame.flags, ev.frame.payload));
  }

  // A frame begun and not finished: the agent may not fall silent in it.
  void ArmFrameTimer() {
    if (frame_timer_armed_) return;
    frame_timer_armed_ = true;
    frame_timer_.expires_at(last_agent_rx_ + opts_.frame_timeout);
    frame_timer_.async_wait([this](std::error_code ec) {
      frame_timer_armed_ = false;
      if (ec || stopping_ || quarantined_ || !agent_decoder_.mid_frame()) return;
      auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_agent_rx_);
      if (silent < opts_.frame_timeout) {
        ArmFrameTimer();
        return;
      }
      Resync("the agent sent " + std::to_string(agent_decoder_.buffered()) +
             " bytes of a frame and then nothing for " + std::to_string(silent.count()) + " ms");
    });
  }

  // A stalled frame is not proof of malice: the VM may be paused, or QEMU
  // starved of CPU, in the middle of a reply. The pending calls fail
  // (UNAVAILABLE: a retry may work), the partial frame is dropped, and a new
  // session starts; if the guest goes on, the rest of that frame is skipped
  // as stale, and the agent drops the replies it still owed.
  void Resync(const std::string& why) {
    const std::string message = why + "; the agent channel was resynchronised: retry the call";
    log_->warn("{} ({} calls failed)", message, routes_.size());
    for (auto& [chan, route] : routes_) {
      if (auto c = route.client.lock()) {
        c->in_flight--;
        c->Reply(route.client_stream, ErrorResponse(Code::kUnavailable, message));
      }
    }
    routes_.clear();
    StartSession();
  }

  // Fails every pending call (the offending stream with `code`, the others
  // with DATA_LOSS) and every later one, and stops listening to the agent:
  // the channel is only drained slowly, to notice QEMU's exit.
  void Quarantine(const std::string& what, uint32_t stream = 0, Code code = Code::kDataLoss) {
    if (quarantined_ || stopping_) return;
    quarantined_ = true;
    quarantine_message_ = "agent protocol violation: " + what + "; the VM's agent channel is quarantined";
    log_->error("{}: every call fails from now on", quarantine_message_);
    sync_timer_.cancel();
    frame_timer_.cancel();
    for (auto& [chan, route] : routes_) {
      if (auto c = route.client.lock()) {
        c->in_flight--;
        c->Reply(route.client_stream,
                 ErrorResponse(chan == stream ? code : Code::kDataLoss, quarantine_message_));
      }
    }
    routes_.clear();
    presync_.clear();
    presync_bytes_ = 0;
    scan_ = std::string();
    agent_decoder_ = FrameDecoder();  // frees a partial frame of up to 4 MiB
  }

  void ConnectConsole() {
    console_.async_connect(stream_protocol::endpoint(opts_.console_socket), [this](std::error_code ec) {
      if (stopping_) return;
      if (ec) {
        console_ = stream_protocol::socket(io_);
        if (connect_deadline_.expired()) {
          log_->warn("cannot connect to the console {}: {}", opts_.console_socket, ec.message());
          return;
        }
        auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(5));
        t->async_wait([this, t](std::error_code e) {
          if (!e) ConnectConsole();
        });
        return;
      }
      ReadConsole();
    });
  }

  // The console is logged as it comes up to a budget of kConsoleRate bytes a
  // second (bursts of kConsoleBurst), read at most every kConsoleReadPause.
  // Over budget, the proxy stops reading it for a while: QEMU's serial port
  // then waits, and so do the guest's console writes. A flood costs the host
  // (QEMU forwards the console byte by byte, each a socket buffer to free)
  // and the log no more than that rate, and nothing is dropped.
  void ReadConsole() {
    if (stopping_) return;
    auto now = Clock::now();
    double refill = std::chrono::duration<double>(now - console_refilled_).count() * kConsoleRate;
    console_budget_ = std::min<double>(kConsoleBurst, console_budget_ + refill);
    console_refilled_ = now;
    const double quantum = kConsoleRate / 10.0;  // a tenth of a second's worth
    if (console_budget_ < quantum) {
      if (now - console_throttle_warned_ >= std::chrono::minutes(1)) {
        log_->warn("the guest console writes faster than {} KiB/s: reading it at that rate",
                   kConsoleRate / 1024);
        console_throttle_warned_ = now;
      }
      double wait_s = (quantum - console_budget_) / kConsoleRate;
      console_timer_.expires_after(
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s)));
      console_timer_.async_wait([this](std::error_code e) {
        if (!e) ReadConsole();
      });
      return;
    }
    size_t max = std::min<size_t>(sizeof(console_buf_), static_cast<size_t>(console_budget_));
    console_.async_read_some(asio::buffer(console_buf_, max), [this](std::error_code ec, size_t n) {
      if (ec) {
        if (!console_line_.empty()) console_log_->info("{}", console_line_);
        console_log_->flush();
        return;
      }
      console_budget_ -= static_cast<double>(n);
      LogConsole(std::string_view(console_buf_, n));
      console_log_->flush();
      if (stopping_) return;
      console_timer_.expires_after(kConsoleReadPause);
      console_timer_.async_wait([this](std::error_code e) {
        if (!e) ReadConsole();
      });
    });
  }

  void LogConsole(std::string_view data) {
    for (char ch : data) {
      if (ch == '\n' || console_line_.size() >= kMaxConsoleLine) {
        console_log_->info("{}", console_line_);
        console_line_.clear();
        if (ch == '\n') continue;
      }
      if (ch == '\r') continue;
      // Keep the log one line per record: control characters become '?'.
      console_line_.push_back((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') ? '?' : ch);
    }
  }

 public:
  void Shutdown(const std::string& why) {
    if (stopping_) return;
    stopping_ = true;
    log_->info("proxy stopping: {}", why);
    if (quarantine_dropped_ > 0)
      log_->info("ignored {} bytes from the quarantined agent", quarantine_dropped_);
    for (auto& [chan, route] : routes_) {
      if (auto c = route.client.lock()) {
        c->Reply(route.client_stream, ErrorResponse(Code::kUnavailable, "agent unavailable: " + why));
      }
    }
    routes_.clear();
    std::error_code ec;
    acceptor_.close(ec);
    connect_timer_.cancel();
    sync_timer_.cancel();
    frame_timer_.cancel();
    drain_timer_.cancel();
    console_timer_.cancel();
    signals_.cancel();
    agent_.close(ec);
    // Give queued error replies a moment to reach clients, then stop.
    auto t = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
    t->async_wait([this, t](std::error_code) {
      console_.close();
      for (auto& [id, c] : std::map(clients_)) c->Close();
      io_.stop();
    });
  }

 private:
  asio::io_context& io_;
  const ProxyOptions& opts_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<spdlog::logger> console_log_;
  stream_protocol::acceptor acceptor_;
  stream_protocol::socket agent_;
  Writer agent_writer_;
  stream_protocol::socket console_;
  asio::steady_timer connect_timer_;
  asio::steady_timer sync_timer_;
  asio::steady_timer frame_timer_;
  asio::steady_timer drain_timer_;
  asio::steady_timer console_timer_;
  asio::signal_set signals_;
  Deadline connect_deadline_;
  bool stopping_ = false;

  uint32_t sync_id_ = 0;
  uint32_t first_chan_id_ = 1;
  uint32_t next_chan_id_ = 1;
  bool chan_wrapped_ = false;
  bool synced_ = false;
  uint64_t syncs_sent_ = 0;
  uint64_t sync_replies_ = 0;
  std::string scan_;
  uint64_t presync_skipped_ = 0;
  std::deque<std::string> presync_;
  size_t presync_bytes_ = 0;
  FrameDecoder agent_decoder_;
  std::vector<DecodeEvent> events_;
  char agent_buf_[kReadChunk];
  std::map<uint32_t, Route> routes_;
  Clock::time_point last_agent_rx_{};
  bool frame_timer_armed_ = false;
  bool quarantined_ = false;
  std::string quarantine_message_;
  uint64_t quarantine_dropped_ = 0;

  char console_buf_[kReadChunk];
  std::string console_line_;
  double console_budget_ = kConsoleBurst;
  Clock::time_point console_refilled_ = Clock::now();
  Clock::time_point console_throttle_warned_{};

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
    Reply(sid, ErrorResponse(Code::kResourceExhausted, "request of " + std::to_string(ev.declared_length) +
                                                           " bytes exceeds the 4 MiB ttrpc limit"));
    return;
  }
  if (ev.frame.type != ttrpc::kTypeRequest) return;  // unary only: data frames are not routed
  if (!stream_ids_.Accept(sid)) {
    Reply(sid, ErrorResponse(Code::kInvalidArgument,
                             "stream id " + std::to_string(sid) + " must be odd and increasing"));
    return;
  }
  if (in_flight >= kMaxPendingPerClient) {
    Reply(sid, ErrorResponse(Code::kResourceExhausted, "too many requests in flight"));
    return;
  }
  server_->Forward(shared_from_this(), sid, ev.frame.type, ev.frame.flags, std::move(ev.frame.payload));
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
