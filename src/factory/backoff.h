// Backoff: the retry state of a background refill (the pool's, the restore
// targets'): failures counted, the last error kept, and the next attempt
// held off exponentially (min, 2 min, 4 min, ... up to max) after failures
// in a row. Not thread-safe: the owner's lock guards it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/clock.h"

namespace vmf {

class Backoff {
 public:
  Backoff(Duration min, Duration max) : min_(min), max_(max) {}

  // Records a failure; returns how long the next attempt waits.
  Duration Failed(std::string error) {
    ++failures_;
    ++in_a_row_;
    last_error_ = std::move(error);
    const Duration wait = std::min<Duration>(min_ * (int64_t{1} << std::min(in_a_row_ - 1, 10)), max_);
    retry_at_ = Clock::now() + wait;
    return wait;
  }
  void Succeeded() {
    in_a_row_ = 0;
    retry_at_ = {};
  }
  // Whether the next attempt is still held off, and until when.
  bool Waiting() const { return Clock::now() < retry_at_; }
  Clock::time_point retry_at() const { return retry_at_; }
  Duration retry_in() const {
    const auto now = Clock::now();
    return retry_at_ > now ? std::chrono::duration_cast<Duration>(retry_at_ - now) : Duration(0);
  }
  uint64_t failures() const { return failures_; }
  int in_a_row() const { return in_a_row_; }
  const std::string& last_error() const { return last_error_; }

 private:
  Duration min_, max_;
  uint64_t failures_ = 0;
  int in_a_row_ = 0;
  std::string last_error_;
  Clock::time_point retry_at_{};
};

}  // namespace vmf
