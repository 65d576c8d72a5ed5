// EventPublisher: sends task events to containerd, in order, without ever
// blocking the caller: a bounded queue and one thread that forwards each
// event over ttrpc to containerd.services.events.ttrpc.v1.Events/Forward on
// $TTRPC_ADDRESS (containerd 1.6's path for shims), reconnecting and
// retrying (5 tries, 1 s apart at most) before it drops an event with a log
// line. Without an address the events are only logged.
//
//   EventPublisher events(getenv("TTRPC_ADDRESS"), flags.ns);
//   containerd::events::TaskStart e; ...;
//   events.Publish("/tasks/start", e);
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "containerd/events.pb.h"
#include "containerd/wire.pb.h"
#include "ttrpc/client.h"

namespace vmf::shim {

// Now, as a protobuf Timestamp.
vmf::wire::Timestamp NowTimestamp();

class EventPublisher {
 public:
  EventPublisher(std::string ttrpc_address, std::string ns);
  // Sends what is queued (for at most 2 s), then stops.
  ~EventPublisher();
  EventPublisher(const EventPublisher&) = delete;
  EventPublisher& operator=(const EventPublisher&) = delete;

  // topic: "/tasks/exit" etc.; the event's Any type URL is its full
  // protobuf name ("containerd.events.TaskExit").
  template <typename Event>
  void Publish(const std::string& topic, const Event& event) {
    PublishRaw(topic, event.GetTypeName(), event.SerializeAsString());
  }
  void PublishRaw(const std::string& topic, const std::string& type_url, const std::string& value);
  // Blocks until the queue is empty or the deadline passes (tests, shutdown).
  void Flush(std::chrono::milliseconds max_wait);

 private:
  struct Item {
    std::string topic, type_url, value;
    vmf::wire::Timestamp at;
  };
  void Run();
  Status Send(const Item& item);

  const std::string address_;  // socket path ("" = log only)
  const std::string ns_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool sending_ = false;
  bool stop_ = false;
  std::unique_ptr<ttrpc::Client> client_;
  std::thread thread_;
};

}  // namespace vmf::shim
