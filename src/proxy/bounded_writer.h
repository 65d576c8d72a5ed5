// BoundedWriter: an asio stream socket with a bounded queue of outgoing
// buffers, written one at a time. A peer that does not read fills the queue
// and is then dropped by the caller, never buffered without limit.
#pragma once

#include <asio.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

namespace vmf {

class BoundedWriter {
 public:
  using Socket = asio::local::stream_protocol::socket;

  BoundedWriter(Socket* sock, size_t max_queued) : sock_(sock), max_queued_(max_queued) {}

  // False if the queue would exceed its bound (the caller drops the peer).
  bool Send(std::string data) {
    if (queued_ + data.size() > max_queued_) return false;
    queued_ += data.size();
    q_.push_back(std::move(data));
    if (!writing_) Next();
    return true;
  }

  // Nothing queued or being written.
  bool idle() const { return !writing_ && q_.empty(); }

  // Called once a write fails; the queue is then empty.
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

  Socket* sock_;
  size_t max_queued_;
  std::deque<std::string> q_;
  size_t queued_ = 0;
  bool writing_ = false;
};

}  // namespace vmf
