// Fuzz target: the QMP client's stream parsing and message routing
// (src/qmp/qmp_client.h), i.e. everything QmpClient does with QEMU's bytes
// short of the socket and the waiting threads.
//
// Input: byte 0 picks how the stream arrives in pieces (fuzz_util.h Chunks),
// byte 1 the parser's line limit (< 128: 16 << (b % 8) bytes, to reach the
// over-long-line paths; else the client's default of 1 MiB); the rest is what
// QEMU writes on the QMP socket.
//
// 1. QmpStreamParser gets the stream whole and in pieces: both must give the
//    same messages and errors, and never buffer more than a line.
// 2. Every message goes through ClassifyQmpMessage (QmpClient::Dispatch's
//    routing decision) and, for error replies (and any message at all, since
//    QEMU's "error" member is as untrusted), QmpErrorStatus.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "hypervisor/qemu/qmp_client.h"

namespace {

using nlohmann::json;
using vmf::Code;
using vmf::Result;
using vmf::qmp::ClassifyQmpMessage;
using vmf::qmp::QmpErrorStatus;
using vmf::qmp::QmpMessageClass;
using vmf::qmp::QmpStreamParser;

bool SameResult(const Result<json>& a, const Result<json>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) return a.status().code() == b.status().code() && a.status().message() == b.status().message();
  return *a == *b;
}

void CheckErrorStatus(const json& error) {
  vmf::Status st = QmpErrorStatus("query-status", error);
  FUZZ_CHECK(!st.ok());
  FUZZ_CHECK(st.code() == Code::kUnknown || st.code() == Code::kNotFound ||
             st.code() == Code::kUnimplemented || st.code() == Code::kFailedPrecondition);
  FUZZ_CHECK(st.message().rfind("QMP command 'query-status' failed: ", 0) == 0);
}

void Route(json msg) {
  QmpMessageClass c = ClassifyQmpMessage(msg);
  // What the client logs: compact, never throwing on odd strings.
  (void)msg.dump(-1, ' ', false, json::error_handler_t::replace);
  switch (c.kind) {
    case QmpMessageClass::kNotObject:
      FUZZ_CHECK(!msg.is_object());
      break;
    case QmpMessageClass::kEvent: {
      FUZZ_CHECK(msg.is_object() && msg["event"].is_string());
      // QmpClient::WaitEvent compares each queued event's name.
      const json& queued = msg;
      (void)(queued["event"] == "STOP");
      break;
    }
    case QmpMessageClass::kGreeting:
      FUZZ_CHECK(msg["QMP"].is_object());
      break;
    case QmpMessageClass::kBadGreeting:
      FUZZ_CHECK(!msg["QMP"].is_object());
      break;
    case QmpMessageClass::kReply:
      FUZZ_CHECK(c.is_error == msg.contains("error"));
      FUZZ_CHECK(c.is_error || msg.contains("return"));
      FUZZ_CHECK(c.has_id == msg.contains("id"));
      FUZZ_CHECK(!c.id || (c.has_id && msg["id"].is_number_unsigned() && msg["id"].get<uint64_t>() == *c.id));
      if (c.is_error) CheckErrorStatus(msg["error"]);
      break;
    case QmpMessageClass::kOther:
      FUZZ_CHECK(msg.is_object() && !msg.contains("return") && !msg.contains("error"));
      break;
  }
  CheckErrorStatus(msg);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t seed = data[0];
  const size_t max_line = data[1] < 128 ? size_t{16} << (data[1] % 8) : size_t{1} << 20;
  std::string_view stream = vmf::fuzz::AsView(data + 2, size - 2);

  QmpStreamParser whole(max_line);
  std::vector<Result<json>> a;
  whole.Feed(stream, &a);

  QmpStreamParser pieces(max_line);
  std::vector<Result<json>> b;
  for (std::string_view piece : vmf::fuzz::Chunks(stream, seed)) {
    pieces.Feed(piece, &b);
    FUZZ_CHECK(pieces.buffered() <= max_line + 1);
  }
  FUZZ_CHECK(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) FUZZ_CHECK(SameResult(a[i], b[i]));
  FUZZ_CHECK(whole.buffered() == pieces.buffered());

  for (auto& m : a) {
    if (!m.ok()) {
      Code code = m.status().code();
      FUZZ_CHECK(code == Code::kDataLoss || code == Code::kResourceExhausted);
      continue;
    }
    Route(std::move(m).value());
  }
  return 0;
}
