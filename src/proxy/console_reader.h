// ConsoleReader: reads the guest's serial console (QEMU's chardev socket)
// and logs it line by line, at a bounded rate.
//
// Lines are cut at 4 KiB and control characters logged as '?'. The console
// is read at up to 16 KiB/s after a 128 KiB burst, at most every 5 ms: over
// that budget the reader pauses, so QEMU's serial port waits and so do the
// guest's console writes. A flood costs the host (QEMU forwards the console
// byte by byte) and the log no more than that rate, and nothing is dropped.
#pragma once

#include <spdlog/spdlog.h>

#include <asio.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "common/clock.h"

namespace vmf {

class ConsoleReader {
 public:
  // Connects to `socket` (retrying every 5 ms until connect_deadline) and
  // logs what it reads into `console`; problems go to `log`.
  ConsoleReader(asio::io_context& io, std::string socket, Deadline connect_deadline,
                std::shared_ptr<spdlog::logger> log, std::shared_ptr<spdlog::logger> console);

  void Start() { Connect(); }
  // No more reads or retries are started; the socket stays open (a read in
  // progress may finish and be logged) until Close.
  void Stop();
  void Close();

  static constexpr size_t kMaxLine = 4096;
  static constexpr size_t kRate = 16 * 1024;    // bytes a second
  static constexpr size_t kBurst = 128 * 1024;  // bytes
  static constexpr auto kReadPause = std::chrono::milliseconds(5);

 private:
  void Connect();
  void Read();
  void LogBytes(std::string_view data);

  asio::io_context& io_;
  std::string path_;
  Deadline connect_deadline_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<spdlog::logger> console_log_;
  asio::local::stream_protocol::socket sock_;
  asio::steady_timer timer_;
  bool stopping_ = false;
  char buf_[64 * 1024];
  std::string line_;
  double budget_ = kBurst;
  Clock::time_point refilled_ = Clock::now();
  Clock::time_point throttle_warned_{};
};

}  // namespace vmf
