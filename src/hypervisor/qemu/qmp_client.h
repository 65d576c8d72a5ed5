// QmpClient: the host's client for QEMU's QMP (QEMU Machine Protocol) socket.
//
// QEMU's output is treated as untrusted-ish input (a guest can trigger
// events), so every line, queue and wait is bounded in size or time:
//
//   VMF_ASSIGN_OR_RETURN(auto qmp, qmp::QmpClient::Connect(dir + "/qmp.sock", Deadline(5s)));
//   VMF_ASSIGN_OR_RETURN(json status, qmp->Execute("query-status"));
//   VMF_RETURN_IF_ERROR(qmp->Execute("stop").status());
//   VMF_RETURN_IF_ERROR(qmp->WaitEvent("STOP", Deadline(2s)).status());
//
// One reader thread per client reads the socket and routes each message:
// replies ("return"/"error") by the "id" the client put on its command,
// events into a bounded queue. Several threads may Execute at once.
#pragma once

#include <spdlog/logger.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/fd.h"
#include "common/status.h"

namespace vmf::qmp {

// Splits a QMP byte stream into JSON messages, one per '\n'-terminated line
// (a trailing '\r' is dropped; blank lines are skipped).
//
// Bounded: a line longer than max_line bytes yields one RESOURCE_EXHAUSTED
// error and is skipped without being buffered (the parser resyncs at the next
// newline). A line that is not JSON, or is nested deeper than kMaxDepth,
// yields a DATA_LOSS error. Never throws. Bytes after the last newline wait
// in the buffer for the next Feed.
class QmpStreamParser {
 public:
  static constexpr int kMaxDepth = 128;

  explicit QmpStreamParser(size_t max_line = 1 << 20);
  void Feed(std::string_view data, std::vector<Result<nlohmann::json>>* out);
  // Bytes of an unfinished line held in the buffer.
  size_t buffered() const { return buf_.size(); }

 private:
  void EmitLine(std::string_view line, std::vector<Result<nlohmann::json>>* out);

  size_t max_line_;
  std::string buf_;
  bool skipping_ = false;  // inside an over-long line, dropping bytes until '\n'
};

// The Status for a QMP {"error": {"class": ..., "desc": ...}} reply to
// `command`. The message is "QMP command 'CMD' failed: CLASS: DESC"; the code
// is NOT_FOUND for DeviceNotFound, UNIMPLEMENTED for CommandNotFound,
// FAILED_PRECONDITION for DeviceNotActive and KVMMissingCap, UNKNOWN otherwise
// (GenericError covers both bad arguments and bad state).
Status QmpErrorStatus(std::string_view command, const nlohmann::json& error);

// How QmpClient routes one parsed message from QEMU (pure; tests and the
// fuzzer call it directly):
//   kNotObject   anything but a JSON object: ignored with a warning
//   kEvent       {"event": "NAME", ...} (a string name): queued
//   kGreeting    {"QMP": {...}}; kBadGreeting: "QMP" is not an object
//   kReply       {"return": ...} or {"error": ...}: routed by id
//   kOther       anything else: ignored (before the greeting: a bad greeting)
// For kReply, `is_error` tells "error" from "return", and `id` is the reply's
// id when it is an unsigned number (ours); `has_id` is false for an id-less
// reply (QEMU's answer to input it could not parse).
struct QmpMessageClass {
  enum Kind { kNotObject, kEvent, kGreeting, kBadGreeting, kReply, kOther } kind = kOther;
  bool is_error = false;
  bool has_id = false;
  std::optional<uint64_t> id;
};
QmpMessageClass ClassifyQmpMessage(const nlohmann::json& msg);

class QmpClient {
 public:
  static constexpr size_t kMaxEvents = 256;

  struct Options {
    size_t max_line = 1 << 20;
    // Where warnings go (unknown replies, id-less errors, dropped events);
    // nullptr means spdlog's default logger.
    std::shared_ptr<spdlog::logger> logger;
  };

  // Connects to QEMU's QMP unix socket (retrying until the deadline: QEMU
  // creates it a moment after it starts), reads the greeting ({"QMP": ...}),
  // sends qmp_capabilities and waits for its reply.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path, const Deadline& deadline);
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path, const Deadline& deadline,
                                                    const Options& options);
  // Same over an fd that is already connected (tests: a socketpair and a fake QEMU).
  static Result<std::unique_ptr<QmpClient>> FromFd(UniqueFd fd, const Deadline& deadline);
  static Result<std::unique_ptr<QmpClient>> FromFd(UniqueFd fd, const Deadline& deadline,
                                                   const Options& options);

  // Closes the socket, fails pending commands with UNAVAILABLE and joins the
  // reader thread.
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs one command and returns its "return" member. Errors: a QMP error
  // reply -> QmpErrorStatus (message names command, class and desc); the
  // deadline -> DEADLINE_EXCEEDED naming the command; connection lost ->
  // UNAVAILABLE ("QMP connection closed"), also for every later call. A failed
  // or timed-out write closes the connection (the byte stream may hold half a
  // command). Thread-safe.
  Result<nlohmann::json> Execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                 const Deadline& deadline = Deadline(std::chrono::seconds(10)));

  // Execute, passing `fd` to QEMU with the command (SCM_RIGHTS on the command's
  // first bytes), as "getfd"/"add-fd" need. The caller keeps its own fd.
  Result<nlohmann::json> ExecuteWithFd(const std::string& command, const nlohmann::json& arguments, int fd,
                                       const Deadline& deadline = Deadline(std::chrono::seconds(10)));

  // Returns (and removes from the queue) the oldest queued event named `name`
  // ({"event": ..., "data": ..., "timestamp": ...}), waiting for one until the
  // deadline. Other events stay queued. Events that arrived before the call
  // count too: call TakeEvents() first to wait only for new ones. The queue
  // keeps the last kMaxEvents events (oldest dropped). DEADLINE_EXCEEDED on
  // timeout; UNAVAILABLE if the connection is closed and none is queued.
  Result<nlohmann::json> WaitEvent(const std::string& name, const Deadline& deadline);
  // Removes and returns every queued event, oldest first.
  std::vector<nlohmann::json> TakeEvents();

  bool connected() const;
  // The greeting's "QMP" member (version, capabilities).
  const nlohmann::json& greeting() const { return greeting_; }
  // Closes the connection now; pending and later calls fail with UNAVAILABLE.
  // Events already queued can still be taken.
  void Close();

 private:
  struct Pending {
    std::string command;
    std::optional<Result<nlohmann::json>> result;
  };

  QmpClient(UniqueFd fd, const Options& options);
  Status Handshake(const Deadline& deadline);
  Result<nlohmann::json> Run(const std::string& command, const nlohmann::json& arguments, int pass_fd,
                             const Deadline& deadline);
  void ReadLoop();
  void Dispatch(nlohmann::json msg);
  void DispatchReply(nlohmann::json msg, const QmpMessageClass& c);
  void FailAllLocked(const Status& st);
  spdlog::logger& log() const;

  UniqueFd fd_;
  Options options_;

  mutable std::mutex mu_;
  std::condition_variable reply_cv_;  // a Pending got its result, or the connection closed
  std::condition_variable event_cv_;  // an event arrived, or the connection closed
  std::condition_variable greeting_cv_;
  bool closed_ = false;
  Status close_reason_;
  std::optional<Status> greeting_status_;  // set once: OK, or why there is no greeting
  nlohmann::json greeting_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Pending>> pending_;
  std::deque<nlohmann::json> events_;
  uint64_t events_dropped_ = 0;

  // One command on the wire at a time: writing_ is the "lock", held outside
  // mu_ while WriteAll runs; others wait on write_cv_ until their deadline.
  bool writing_ = false;
  std::condition_variable write_cv_;
  std::thread reader_;
};

}  // namespace vmf::qmp
