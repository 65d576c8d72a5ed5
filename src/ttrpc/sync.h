// The vmf-sync rule: how a host opens a session on an agent channel, a byte
// stream with no connection semantics that may still hold bytes of an
// earlier session.
//
// The host sends a grpc.Health/Check carrying metadata kSyncMetadataKey on a
// fresh odd stream id S (SyncRequestFrame). The agent treats such a request
// as a new baseline for its stream ids and drops the replies it still owed.
// The host discards every byte until the header of a response on stream S
// (SyncScanner) and decodes frames from there.
//
//   SyncScanner scan(sync_id);
//   while (auto data = Read()) {
//     if (auto from_sync = scan.Feed(*data)) { decoder.Feed(*from_sync, &events); break; }
//   }
//
// Linked into the static guest agent too (see wire.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ttrpc.pb.h"

namespace vmf::ttrpc {

// Metadata key that marks a Health.Check request as a session resync.
inline constexpr char kSyncMetadataKey[] = "vmf-sync";

// The longest payload a sync reply header may announce: a Health.Check
// response is a few bytes, so a header announcing more is not the reply.
inline constexpr uint32_t kMaxSyncReplyLength = 4096;

// The sync request on stream_id, framed: a grpc.Health/Check carrying
// metadata kSyncMetadataKey (its value is the stream id in decimal).
std::string SyncRequestFrame(uint32_t stream_id);

// Whether a request is a sync request (grpc.Health/Check with the metadata
// key). The stream id it came on is the caller's to check.
bool IsSyncRequest(const ::ttrpc::Request& req);

// Skips stale bytes until the header of a response on the sync stream.
// Between feeds it keeps at most kHeaderSize-1 bytes (the start of a header
// split across two reads), so it holds no more than one feed's worth.
class SyncScanner {
 public:
  explicit SyncScanner(uint32_t sync_id) : id_(sync_id) {}

  // Until the sync header is found: returns nullopt (the bytes are stale) or,
  // once it is, the bytes from that header on, to be decoded as frames. After
  // that every feed is returned as it is. A returned view is valid until the
  // next call.
  std::optional<std::string_view> Feed(std::string_view data);

  bool found() const { return found_; }
  // Stale bytes dropped so far.
  uint64_t skipped() const { return skipped_; }
  uint32_t sync_id() const { return id_; }

 private:
  uint32_t id_;
  bool found_ = false;
  uint64_t skipped_ = 0;
  std::string buf_;
};

}  // namespace vmf::ttrpc
