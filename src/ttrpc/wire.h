// Small pieces of the ttrpc wire format shared by every ttrpc speaker in the
// tree (the host's server and client, the proxy, the guest agent): response
// payloads, big-endian words and the stream-id rule.
//
//   std::string frame = EncodeFrame(id, kTypeResponse, 0, ErrorResponse(Code::kNotFound, "no such VM"));
//   StreamIdRule ids;
//   if (!ids.Accept(stream_id)) ...;  // even, or not above the last accepted one
//
// This file is linked into the static guest agent too: it depends only on
// common/status.h and the protobuf-lite ttrpc messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "ttrpc.pb.h"

namespace vmf::ttrpc {

// A ttrpc.Response carrying an error status (code and message).
::ttrpc::Response ErrorResponseProto(Code code, std::string_view message);
// The same, serialised: the payload of a response frame.
std::string ErrorResponse(Code code, std::string_view message);
// A serialised ttrpc.Response carrying `payload` and no status.
std::string OkResponse(std::string payload);

// Big-endian 32-bit words, as in the frame header.
uint32_t LoadBE32(const char* p);
void StoreBE32(char* p, uint32_t v);

// The ttrpc rule for the stream ids a client opens on one connection: odd,
// and each above the one before.
class StreamIdRule {
 public:
  StreamIdRule() = default;
  // Starts from `last`, the highest id already accepted (0: none).
  explicit StreamIdRule(uint32_t last) : last_(last) {}

  // Whether `id` may open a stream now; does not record it.
  bool Allows(uint32_t id) const { return id % 2 == 1 && id > last_; }
  // If allowed, records `id` as the last one and returns true.
  bool Accept(uint32_t id) {
    if (!Allows(id)) return false;
    last_ = id;
    return true;
  }
  // Makes `id` the last accepted id whatever came before (a resync sets a
  // new baseline, which may be below the old one).
  void Restart(uint32_t id) { last_ = id; }
  uint32_t last() const { return last_; }

 private:
  uint32_t last_ = 0;
};

}  // namespace vmf::ttrpc
