#include "ttrpc/wire.h"

#include <utility>

namespace vmf::ttrpc {

::ttrpc::Response ErrorResponseProto(Code code, std::string_view message) {
  ::ttrpc::Response r;
  r.mutable_status()->set_code(static_cast<int>(code));
  r.mutable_status()->set_message(std::string(message));
  return r;
}

std::string ErrorResponse(Code code, std::string_view message) {
  return ErrorResponseProto(code, message).SerializeAsString();
}

std::string OkResponse(std::string payload) {
  ::ttrpc::Response r;
  r.set_payload(std::move(payload));
  return r.SerializeAsString();
}

uint32_t LoadBE32(const char* p) {
  auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
}

void StoreBE32(char* p, uint32_t v) {
  p[0] = static_cast<char>((v >> 24) & 0xff);
  p[1] = static_cast<char>((v >> 16) & 0xff);
  p[2] = static_cast<char>((v >> 8) & 0xff);
  p[3] = static_cast<char>(v & 0xff);
}

}  // namespace vmf::ttrpc
