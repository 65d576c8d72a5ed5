// Deadlines on the monotonic clock, used by every call that waits on the guest.
#pragma once

#include <algorithm>
#include <chrono>

namespace vmf {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;

class Deadline {
 public:
  explicit Deadline(Duration d) : at_(Clock::now() + d) {}
  static Deadline At(Clock::time_point t) { return Deadline(t); }
  Clock::time_point when() const { return at_; }
  bool expired() const { return Clock::now() >= at_; }
  // Milliseconds left, clamped to [0, INT_MAX/2], for poll().
  int remaining_ms() const {
    auto left = std::chrono::duration_cast<Duration>(at_ - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1 << 30));
  }

 private:
  explicit Deadline(Clock::time_point t) : at_(t) {}
  Clock::time_point at_;
};

}  // namespace vmf
