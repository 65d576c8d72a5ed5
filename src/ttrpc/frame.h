// ttrpc framing: a 10-byte header (length, stream id, type, flags; big-endian)
// followed by at most 4 MiB of payload.
//
// FrameDecoder is an incremental, bounded parser for an untrusted byte
// stream: it never allocates more than one maximal frame, and a header that
// announces a larger payload yields an kOversized event and the payload is
// skipped as it arrives, as the ttrpc protocol asks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vmf::ttrpc {

inline constexpr size_t kHeaderSize = 10;
inline constexpr uint32_t kMaxPayload = 4u << 20;

inline constexpr uint8_t kTypeRequest = 1;
inline constexpr uint8_t kTypeResponse = 2;
inline constexpr uint8_t kTypeData = 3;

inline constexpr uint8_t kFlagRemoteClosed = 0x01;
inline constexpr uint8_t kFlagRemoteOpen = 0x02;
inline constexpr uint8_t kFlagNoData = 0x04;

struct Frame {
  uint32_t stream_id = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
  std::string payload;
};

// Header + payload. The caller keeps payload.size() <= kMaxPayload.
std::string EncodeFrame(uint32_t stream_id, uint8_t type, uint8_t flags, std::string_view payload);

struct DecodeEvent {
  enum Kind { kFrame, kOversized } kind = kFrame;
  Frame frame;                   // kFrame: the whole frame; kOversized: header fields only
  uint32_t declared_length = 0;  // kOversized: the length the header announced
};

class FrameDecoder {
 public:
  // Consumes data and appends every complete frame (or oversized header) to out.
  void Feed(std::string_view data, std::vector<DecodeEvent>* out);
  // Drops any partial frame: used when the peer reconnects or goes silent
  // in the middle of a frame.
  void Reset();
  // True while a frame has started but not completed (or a skip is running).
  bool mid_frame() const { return !buf_.empty() || skip_ > 0; }
  size_t buffered() const { return buf_.size(); }

 private:
  std::string buf_;
  uint64_t skip_ = 0;  // payload bytes of an oversized frame still to discard
};

}  // namespace vmf::ttrpc
