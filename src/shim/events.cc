#include "shim/events.h"

#include <chrono>

#include "common/log.h"
#include "containerd/ttrpc_events.pb.h"

namespace vmf::shim {
namespace {
constexpr size_t kMaxQueued = 4096;
constexpr int kTries = 5;
}  // namespace

vmf::wire::Timestamp NowTimestamp() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(now);
  vmf::wire::Timestamp t;
  t.set_seconds(secs.count());
  t.set_nanos(static_cast<int32_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now - secs).count()));
  return t;
}

EventPublisher::EventPublisher(std::string ttrpc_address, std::string ns)
    : address_(ttrpc_address.rfind("unix://", 0) == 0 ? ttrpc_address.substr(7) : std::move(ttrpc_address)),
      ns_(std::move(ns)) {
  thread_ = std::thread([this] { Run(); });
}

EventPublisher::~EventPublisher() {
  Flush(std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EventPublisher::PublishRaw(const std::string& topic, const std::string& type_url,
                                const std::string& value) {
  std::lock_guard<std::mutex> l(mu_);
  if (queue_.size() >= kMaxQueued) {
    spdlog::warn("event queue full: dropping {}", topic);
    return;
  }
  queue_.push_back(Item{topic, type_url, value, NowTimestamp()});
  cv_.notify_all();
}

void EventPublisher::Flush(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait_for(l, max_wait, [this] { return queue_.empty() && !sending_; });
}

Status EventPublisher::Send(const Item& item) {
  if (!client_ || !client_->connected()) {
    VMF_ASSIGN_OR_RETURN(client_, ttrpc::Client::Connect(address_, Deadline(std::chrono::seconds(2))));
  }
  containerd::services::events::ttrpc::v1::ForwardRequest req;
  auto* env = req.mutable_envelope();
  *env->mutable_timestamp() = item.at;
  env->set_namespace_(ns_);
  env->set_topic(item.topic);
  env->mutable_event()->set_type_url(item.type_url);
  env->mutable_event()->set_value(item.value);
  vmf::wire::Empty resp;
  return client_->Call("containerd.services.events.ttrpc.v1.Events", "Forward", req, &resp,
                       Deadline(std::chrono::seconds(5)));
}

void EventPublisher::Run() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping
    Item item = std::move(queue_.front());
    queue_.pop_front();
    sending_ = true;
    l.unlock();
    if (address_.empty()) {
      spdlog::info("event {} (no containerd to send it to)", item.topic);
    } else {
      Status st;
      for (int i = 0; i < kTries; ++i) {
        st = Send(item);
        if (st.ok()) break;
        client_.reset();
        if (i + 1 < kTries) std::this_thread::sleep_for(std::chrono::milliseconds(200 * (i + 1)));
      }
      if (!st.ok()) spdlog::warn("could not send event {}: {}", item.topic, st.ToString());
    }
    l.lock();
    sending_ = false;
    cv_.notify_all();
  }
}

}  // namespace vmf::shim
