#include "ttrpc/sync.h"

#include "health.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/wire.h"

namespace vmf::ttrpc {

std::string SyncRequestFrame(uint32_t stream_id) {
  grpc::CheckRequest check;
  ::ttrpc::Request req;
  req.set_service("grpc.Health");
  req.set_method("Check");
  req.set_payload(check.SerializeAsString());
  auto* kv = req.add_metadata();
  kv->set_key(kSyncMetadataKey);
  kv->set_value(std::to_string(stream_id));
  return EncodeFrame(stream_id, kTypeRequest, 0, req.SerializeAsString());
}

bool IsSyncRequest(const ::ttrpc::Request& req) {
  if (req.service() != "grpc.Health" || req.method() != "Check") return false;
  for (const auto& kv : req.metadata()) {
    if (kv.key() == kSyncMetadataKey) return true;
  }
  return false;
}

std::optional<std::string_view> SyncScanner::Feed(std::string_view data) {
  if (found_) {
    buf_ = std::string();  // what the last call handed over has been used
    return data;
  }
  buf_.append(data);
  for (size_t k = 0; k + kHeaderSize <= buf_.size(); ++k) {
    const char* h = buf_.data() + k;
    if (LoadBE32(h + 4) == id_ && static_cast<uint8_t>(h[8]) == kTypeResponse &&
        LoadBE32(h) <= kMaxSyncReplyLength) {
      found_ = true;
      skipped_ += k;
      buf_.erase(0, k);
      return std::string_view(buf_);
    }
  }
  // Keep only what may be the start of a header split across two feeds.
  if (buf_.size() >= kHeaderSize) {
    size_t drop = buf_.size() - (kHeaderSize - 1);
    skipped_ += drop;
    buf_.erase(0, drop);
  }
  return std::nullopt;
}

}  // namespace vmf::ttrpc
