#include "proxy/console_reader.h"

#include <algorithm>
#include <utility>

namespace vmf {

using asio::local::stream_protocol;

ConsoleReader::ConsoleReader(asio::io_context& io, std::string socket, Deadline connect_deadline,
                             std::shared_ptr<spdlog::logger> log, std::shared_ptr<spdlog::logger> console)
    : io_(io),
      path_(std::move(socket)),
      connect_deadline_(connect_deadline),
      log_(std::move(log)),
      console_log_(std::move(console)),
      sock_(io),
      timer_(io) {}

void ConsoleReader::Stop() {
  stopping_ = true;
  timer_.cancel();
}

void ConsoleReader::Close() {
  std::error_code ec;
  sock_.close(ec);
}

void ConsoleReader::Connect() {
  sock_.async_connect(stream_protocol::endpoint(path_), [this](std::error_code ec) {
    if (stopping_) return;
    if (ec) {
      sock_ = stream_protocol::socket(io_);
      if (connect_deadline_.expired()) {
        log_->warn("cannot connect to the console {}: {}", path_, ec.message());
        return;
      }
      timer_.expires_after(std::chrono::milliseconds(5));
      timer_.async_wait([this](std::error_code e) {
        if (!e) Connect();
      });
      return;
    }
    Read();
  });
}

// The console is logged as it comes up to a budget of kRate bytes a second
// (bursts of kBurst), read at most every kReadPause. Over budget, the reader
// stops reading for a while.
void ConsoleReader::Read() {
  if (stopping_) return;
  auto now = Clock::now();
  double refill = std::chrono::duration<double>(now - refilled_).count() * kRate;
  budget_ = std::min<double>(kBurst, budget_ + refill);
  refilled_ = now;
  const double quantum = kRate / 10.0;  // a tenth of a second's worth
  if (budget_ < quantum) {
    if (now - throttle_warned_ >= std::chrono::minutes(1)) {
      log_->warn("the guest console writes faster than {} KiB/s: reading it at that rate", kRate / 1024);
      throttle_warned_ = now;
    }
    double wait_s = (quantum - budget_) / kRate;
    timer_.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wait_s)));
    timer_.async_wait([this](std::error_code e) {
      if (!e) Read();
    });
    return;
  }
  size_t max = std::min<size_t>(sizeof(buf_), static_cast<size_t>(budget_));
  sock_.async_read_some(asio::buffer(buf_, max), [this](std::error_code ec, size_t n) {
    if (ec) {
      if (!line_.empty()) console_log_->info("{}", line_);
      console_log_->flush();
      return;
    }
    budget_ -= static_cast<double>(n);
    LogBytes(std::string_view(buf_, n));
    console_log_->flush();
    if (stopping_) return;
    timer_.expires_after(kReadPause);
    timer_.async_wait([this](std::error_code e) {
      if (!e) Read();
    });
  });
}

void ConsoleReader::LogBytes(std::string_view data) {
  for (char ch : data) {
    if (ch == '\n' || line_.size() >= kMaxLine) {
      console_log_->info("{}", line_);
      line_.clear();
      if (ch == '\n') continue;
    }
    if (ch == '\r') continue;
    // Keep the log one line per record: control characters become '?'.
    line_.push_back((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') ? '?' : ch);
  }
}

}  // namespace vmf
