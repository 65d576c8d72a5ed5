#include "ttrpc/frame.h"

#include <algorithm>

#include "ttrpc/wire.h"

namespace vmf::ttrpc {

std::string EncodeFrame(uint32_t stream_id, uint8_t type, uint8_t flags, std::string_view payload) {
  std::string out(kHeaderSize, '\0');
  out.reserve(kHeaderSize + payload.size());
  StoreBE32(out.data(), static_cast<uint32_t>(payload.size()));
  StoreBE32(out.data() + 4, stream_id);
  out[8] = static_cast<char>(type);
  out[9] = static_cast<char>(flags);
  out.append(payload);
  return out;
}

void FrameDecoder::Feed(std::string_view data, std::vector<DecodeEvent>* out) {
  while (!data.empty()) {
    if (skip_ > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(skip_, data.size()));
      skip_ -= n;
      data.remove_prefix(n);
      continue;
    }
    if (buf_.size() < kHeaderSize) {
      size_t n = std::min(kHeaderSize - buf_.size(), data.size());
      buf_.append(data.substr(0, n));
      data.remove_prefix(n);
      if (buf_.size() < kHeaderSize) return;
      uint32_t len = LoadBE32(buf_.data());
      if (len > kMaxPayload) {
        DecodeEvent ev;
        ev.kind = DecodeEvent::kOversized;
        ev.frame.stream_id = LoadBE32(buf_.data() + 4);
        ev.frame.type = static_cast<uint8_t>(buf_[8]);
        ev.frame.flags = static_cast<uint8_t>(buf_[9]);
        ev.declared_length = len;
        out->push_back(std::move(ev));
        skip_ = len;
        buf_.clear();
        continue;
      }
    }
    uint32_t len = LoadBE32(buf_.data());
    size_t want = kHeaderSize + len - buf_.size();
    size_t n = std::min(want, data.size());
    buf_.append(data.substr(0, n));
    data.remove_prefix(n);
    if (buf_.size() < kHeaderSize + len) return;
    DecodeEvent ev;
    ev.frame.stream_id = LoadBE32(buf_.data() + 4);
    ev.frame.type = static_cast<uint8_t>(buf_[8]);
    ev.frame.flags = static_cast<uint8_t>(buf_[9]);
    ev.frame.payload = buf_.substr(kHeaderSize);
    out->push_back(std::move(ev));
    buf_.clear();
  }
}

void FrameDecoder::Reset() {
  buf_.clear();
  skip_ = 0;
}

}  // namespace vmf::ttrpc
