// ttrpc framing on untrusted byte streams.
#include <gtest/gtest.h>

#include <random>

#include "ttrpc/frame.h"

namespace vmf::ttrpc {
namespace {

std::vector<DecodeEvent> FeedAll(FrameDecoder& d, const std::string& bytes, size_t chunk) {
  std::vector<DecodeEvent> out;
  for (size_t i = 0; i < bytes.size(); i += chunk) d.Feed(std::string_view(bytes).substr(i, chunk), &out);
  return out;
}

TEST(FrameTest, RoundTripInAnyChunking) {
  std::string stream = EncodeFrame(1, kTypeRequest, 0, "hello") + EncodeFrame(3, kTypeResponse, 0, "") +
                       EncodeFrame(5, kTypeData, kFlagRemoteClosed, std::string(70000, 'x'));
  for (size_t chunk : {1, 3, 10, 11, 4096, 1 << 20}) {
    FrameDecoder d;
    auto ev = FeedAll(d, stream, chunk);
    ASSERT_EQ(ev.size(), 3u) << "chunk " << chunk;
    EXPECT_EQ(ev[0].frame.stream_id, 1u);
    EXPECT_EQ(ev[0].frame.type, kTypeRequest);
    EXPECT_EQ(ev[0].frame.payload, "hello");
    EXPECT_EQ(ev[1].frame.stream_id, 3u);
    EXPECT_EQ(ev[1].frame.payload, "");
    EXPECT_EQ(ev[2].frame.flags, kFlagRemoteClosed);
    EXPECT_EQ(ev[2].frame.payload.size(), 70000u);
    EXPECT_FALSE(d.mid_frame());
  }
}

TEST(FrameTest, HeaderIsBigEndian) {
  std::string f = EncodeFrame(0x01020304, 2, 5, "ab");
  ASSERT_EQ(f.size(), 12u);
  EXPECT_EQ(f.substr(0, 10), std::string("\x00\x00\x00\x02\x01\x02\x03\x04\x02\x05", 10));
}

TEST(FrameTest, PartialFrameWaitsAndResetDropsIt) {
  FrameDecoder d;
  std::vector<DecodeEvent> out;
  std::string f = EncodeFrame(7, kTypeRequest, 0, "payload");
  d.Feed(f.substr(0, 12), &out);
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(d.mid_frame());
  d.Reset();
  EXPECT_FALSE(d.mid_frame());
  d.Feed(EncodeFrame(9, kTypeRequest, 0, "x"), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame.stream_id, 9u);
}

TEST(FrameTest, OversizedLengthIsReportedAndSkippedWithoutAllocating) {
  FrameDecoder d;
  std::vector<DecodeEvent> out;
  std::string hdr = EncodeFrame(11, kTypeRequest, 0, "");
  hdr[0] = 0x00;
  hdr[1] = 0x50;  // 5 MiB + change
  d.Feed(hdr, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, DecodeEvent::kOversized);
  EXPECT_EQ(out[0].frame.stream_id, 11u);
  EXPECT_GT(out[0].declared_length, kMaxPayload);
  // The announced payload is discarded as it arrives; the decoder never holds it.
  std::string junk(1 << 20, 'j');
  uint32_t left = out[0].declared_length;
  out.clear();
  while (left > 0) {
    size_t n = std::min<size_t>(left, junk.size());
    d.Feed(std::string_view(junk).substr(0, n), &out);
    EXPECT_EQ(d.buffered(), 0u);
    left -= static_cast<uint32_t>(n);
  }
  EXPECT_TRUE(out.empty());
  d.Feed(EncodeFrame(13, kTypeRequest, 0, "next"), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].frame.payload, "next");
}

TEST(FrameTest, MaximalFrameIsAccepted) {
  FrameDecoder d;
  std::vector<DecodeEvent> out;
  d.Feed(EncodeFrame(1, kTypeResponse, 0, std::string(kMaxPayload, 'm')), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, DecodeEvent::kFrame);
  EXPECT_EQ(out[0].frame.payload.size(), kMaxPayload);
}

TEST(FrameTest, GarbageNeverCrashesAndStaysBounded) {
  std::mt19937 rng(42);
  FrameDecoder d;
  std::vector<DecodeEvent> out;
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    d.Feed(junk, &out);
    EXPECT_LE(d.buffered(), kHeaderSize + kMaxPayload);
    out.clear();
  }
}

}  // namespace
}  // namespace vmf::ttrpc
