#include "factory/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "common/fd.h"

namespace vmf {
namespace {

// What identifies one version of a file's contents.
using FileVersion = std::tuple<dev_t, ino_t, off_t, int64_t, int64_t, int64_t, int64_t>;

FileVersion VersionOf(const struct stat& st) {
  return {st.st_dev,          st.st_ino,         st.st_size,        st.st_mtim.tv_sec,
          st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec};
}

struct Verified {
  std::mutex mu;
  std::map<std::string, std::pair<FileVersion, std::string>> by_path;  // path -> (version, digest)
};

std::string StampOf(const struct stat& st) {
  auto ns = [](const struct timespec& t) {
    return std::to_string(int64_t{t.tv_sec} * 1000000000 + t.tv_nsec);
  };
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) +
         ":" + ns(st.st_mtim) + ":" + ns(st.st_ctim);
}

Verified& VerifiedFiles() {
  static Verified v;
  return v;
}

std::string HexOf(const unsigned char* md, unsigned int len) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

Result<std::string> Sha256Fd(int fd, const std::string& path) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return Internal("SHA-256 init failed");
  std::vector<unsigned char> buf(1 << 20);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, "read " + path);
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n)) != 1)
      return Internal("SHA-256 failed");
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) return Internal("SHA-256 final failed");
  return HexOf(md, len);
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) return "";
  return HexOf(md, len);
}

Result<std::string> Sha256File(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, "open " + path);
  return Sha256Fd(fd.get(), path);
}

Result<std::string> FileStamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  return StampOf(st);
}

Status CheckDigest(const std::string& what, const std::string& path, const std::string& want,
                   const std::string& stamp) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(errno, what + " " + path);
  struct stat before {};
  if (::fstat(fd.get(), &before) != 0) return ErrnoStatus(errno, "stat " + path);
  if (!stamp.empty() && stamp == StampOf(before)) return OkStatus();  // the version init hashed
  Verified& v = VerifiedFiles();
  {
    std::lock_guard lock(v.mu);
    auto it = v.by_path.find(path);
    if (it != v.by_path.end() && it->second.first == VersionOf(before) && it->second.second == want) {
      return OkStatus();
    }
  }
  VMF_ASSIGN_OR_RETURN(std::string got, Sha256Fd(fd.get(), path));
  if (got != want) {
    return DataLoss(what + " " + path + " does not match the digest `vmfactory init` recorded (sha256 " +
                    got + ", expected " + want + "): it was changed after the template was made; " +
                    "recreate it with `vmfactory init --force`");
  }
  struct stat after {};
  // Remembered only if the file did not change while it was read.
  if (::fstat(fd.get(), &after) == 0 && VersionOf(after) == VersionOf(before)) {
    std::lock_guard lock(v.mu);
    v.by_path[path] = {VersionOf(after), got};
  }
  return OkStatus();
}

}  // namespace vmf
