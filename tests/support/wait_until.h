// WaitUntil: what a test does instead of sleeping for a guess. Polls `pred`
// every `every` until it holds (true) or `timeout` has passed (false); the
// caller's expectation after it says what was awaited.
//
//   ASSERT_TRUE(WaitUntil([&] { return pool.Pool().ready.size() == 2; }, 10s));
#pragma once

#include <chrono>
#include <thread>

namespace vmf::testing {

template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10),
               std::chrono::milliseconds every = std::chrono::milliseconds(10)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

}  // namespace vmf::testing
