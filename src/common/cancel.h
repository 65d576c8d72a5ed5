// CancelToken: lets one thread (a signal handler thread, a timer) abort work
// that another thread is blocked in, by running registered actions.
#pragma once

#include <functional>
#include <map>
#include <mutex>

namespace vmf {

class CancelToken {
 public:
  // Runs every registered action once; later registrations run at once.
  void Cancel() {
    std::map<int, std::function<void()>> actions;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      actions.swap(actions_);
    }
    for (auto& [id, fn] : actions) fn();
  }
  bool cancelled() const {
    std::lock_guard<std::mutex> l(mu_);
    return cancelled_;
  }
  // Returns a handle for Remove().
  int OnCancel(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!cancelled_) {
        actions_[++next_] = std::move(fn);
        return next_;
      }
    }
    fn();
    return 0;
  }
  void Remove(int handle) {
    std::lock_guard<std::mutex> l(mu_);
    actions_.erase(handle);
  }

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  int next_ = 0;
  std::map<int, std::function<void()>> actions_;
};

}  // namespace vmf
