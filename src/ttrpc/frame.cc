#include "ttrpc/frame.h"

#include <algorithm>

namespace vmf::ttrpc {
namespace {

void PutU32(std::string* s, uint32_t v) {
  s->push_back(static_cast<char>((v >> 24) & 0xff));
  s->push_back(static_cast<char>((v >> 16) & 0xff));
  s->push_back(static_cast<char>((v >> 8) & 0xff));
  s->push_back(static_cast<char>(v & 0xff));
}

uint32_t GetU32(const char* p) {
  auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

}  // namespace

std::string EncodeFrame(uint32_t stream_id, uint8_t type, uint8_t flags, std::string_view payload) {
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  PutU32(&out, static_cast<uint32_t>(payload.size()));
  PutU32(&out, stream_id);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
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
      uint32_t len = GetU32(buf_.data());
      if (len > kMaxPayload) {
        DecodeEvent ev;
        ev.kind = DecodeEvent::kOversized;
        ev.frame.stream_id = GetU32(buf_.data() + 4);
        ev.frame.type = static_cast<uint8_t>(buf_[8]);
        ev.frame.flags = static_cast<uint8_t>(buf_[9]);
        ev.declared_length = len;
        out->push_back(std::move(ev));
        skip_ = len;
        buf_.clear();
        continue;
      }
    }
    uint32_t len = GetU32(buf_.data());
    size_t want = kHeaderSize + len - buf_.size();
    size_t n = std::min(want, data.size());
    buf_.append(data.substr(0, n));
    data.remove_prefix(n);
    if (buf_.size() < kHeaderSize + len) return;
    DecodeEvent ev;
    ev.frame.stream_id = GetU32(buf_.data() + 4);
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
