// Helpers shared by the fuzz targets: invariant checks that crash (so that
// libFuzzer and the corpus tests report them) and deterministic chunking of
// an input, so that one input also decides how a stream arrives in pieces.
#pragma once

#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

// Aborts with the failed condition: an invariant of the code under test broke.
#define FUZZ_CHECK(cond)                                                                     \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace vmf::fuzz {

// libprotobuf logs an ERROR line for every proto3 string field that is not
// UTF-8; fuzzing makes millions of them, which would fill the logs and slow
// the run. Silenced once per process.
inline void QuietProtobuf() {
  static const bool done = (google::protobuf::SetLogHandler(nullptr), true);
  (void)done;
}

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// The usual start of a target: protobuf quietened, then byte 0 of the input
// chooses how the rest (the stream) is cut into pieces (see Chunks). Empty
// inputs give nullopt.
struct SeededInput {
  uint8_t seed;
  std::string_view stream;
};
inline std::optional<SeededInput> SplitSeed(const uint8_t* data, size_t size) {
  QuietProtobuf();
  if (size == 0) return std::nullopt;
  return SeededInput{data[0], AsView(data + 1, size - 1)};
}

// Splits data into pieces whose sizes come from `seed`: 0 keeps it whole;
// otherwise sizes are 1..2^(seed % 8) bytes, drawn from a small PRNG seeded
// with the seed, so that the same input always splits the same way.
inline std::vector<std::string_view> Chunks(std::string_view data, uint8_t seed) {
  if (seed == 0) return {data};
  std::vector<std::string_view> out;
  uint32_t x = 0x9e3779b9u ^ (static_cast<uint32_t>(seed) * 0x85ebca6bu);
  const uint32_t max = 1u << (seed % 8);
  while (!data.empty()) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    size_t n = 1 + x % max;
    if (n > data.size()) n = data.size();
    out.push_back(data.substr(0, n));
    data.remove_prefix(n);
  }
  return out;
}

}  // namespace vmf::fuzz
