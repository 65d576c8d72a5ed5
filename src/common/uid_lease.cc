#include "common/uid_lease.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "common/fd.h"
#include "common/io.h"

namespace vmf {
namespace {

constexpr size_t kMaxLeaseBytes = 4096;

// Whether the lease at path is held by someone: its owner path still exists.
bool LeaseLive(const std::string& path) {
  auto owner = ReadFile(path, kMaxLeaseBytes);
  if (!owner.ok()) return owner.status().code() != Code::kNotFound;
  if (owner->empty()) return true;  // being written right now
  struct stat st {};
  return ::stat(owner->c_str(), &st) == 0;
}

}  // namespace

UidLease::UidLease(UidLease&& o) noexcept : path_(std::exchange(o.path_, {})), uid_(o.uid_) {}

UidLease& UidLease::operator=(UidLease&& o) noexcept {
  if (this != &o) {
    Release();
    path_ = std::exchange(o.path_, {});
    uid_ = o.uid_;
  }
  return *this;
}

UidLease::~UidLease() { Release(); }

void UidLease::Release() {
  if (path_.empty()) return;
  ::unlink(path_.c_str());
  path_.clear();
}

Result<UidLease> UidLease::Acquire(const std::string& dir, uint32_t first, uint32_t count,
                                   const std::string& owner) {
  if (count == 0) return InvalidArgument("uid range is empty");
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoStatus(errno, "uid lease dir " + dir);
  // One taker at a time scans the range (stale leases are replaced under it).
  UniqueFd lock(::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return ErrnoStatus(errno, "uid lease lock in " + dir);
  if (::flock(lock.get(), LOCK_EX) != 0) return ErrnoStatus(errno, "lock " + dir + "/.lock");
  // Start at a random place so that takers rarely meet the same stale leases.
  static thread_local std::minstd_rand rng{std::random_device{}()};
  uint32_t start = static_cast<uint32_t>(rng() % count);
  for (uint32_t i = 0; i < count; ++i) {
    uid_t uid = first + (start + i) % count;
    std::string path = dir + "/" + std::to_string(uid);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd && errno == EEXIST && !LeaseLive(path)) {
      ::unlink(path.c_str());
      fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (!fd) {
      if (errno == EEXIST) continue;
      return ErrnoStatus(errno, "uid lease " + path);
    }
    UidLease lease(path, uid);
    VMF_RETURN_IF_ERROR(WriteAll(fd.get(), owner, Deadline(std::chrono::seconds(1))));
    return lease;
  }
  return ResourceExhausted("every uid of the range " + std::to_string(first) + ".." +
                           std::to_string(first + count - 1) +
                           " is in use by a VM; raise security.uid_count or stop VMs");
}

Result<UidLease> UidLease::Adopt(const std::string& dir, uid_t uid, const std::string& owner) {
  std::string path = dir + "/" + std::to_string(uid);
  auto held = ReadFile(path, kMaxLeaseBytes);
  if (!held.ok()) return held.status().WithContext("uid lease of uid " + std::to_string(uid));
  if (*held != owner) {
    return FailedPrecondition("uid " + std::to_string(uid) + " is not leased to " + owner);
  }
  return UidLease(path, uid);
}

Status CheckUidRange(uint32_t first, uint32_t count) {
  if (count == 0) return InvalidArgument("security.uid_count: must be at least 1");
  if (first == 0) return InvalidArgument("security.uid_first: 0 is root");
  uint64_t last = uint64_t{first} + count - 1;
  if (last >= 0xfffffffeULL) {
    return InvalidArgument("security.uid_first + uid_count: the range ends at " + std::to_string(last) +
                           ", past the largest uid 4294967293");
  }
  auto inside = [&](uint64_t id) { return id >= first && id <= last; };
  std::string clash;
  ::setpwent();
  while (struct passwd* pw = ::getpwent()) {
    if (inside(pw->pw_uid)) {
      clash = "user " + std::string(pw->pw_name) + " (uid " + std::to_string(pw->pw_uid) + ")";
      break;
    }
  }
  ::endpwent();
  if (clash.empty()) {
    ::setgrent();
    while (struct group* gr = ::getgrent()) {
      if (inside(gr->gr_gid)) {
        clash = "group " + std::string(gr->gr_name) + " (gid " + std::to_string(gr->gr_gid) + ")";
        break;
      }
    }
    ::endgrent();
  }
  if (!clash.empty()) {
    return FailedPrecondition("security.uid_first/uid_count: the range " + std::to_string(first) + ".." +
                              std::to_string(last) + " holds " + clash +
                              " of this machine; VMs must not share an identity with it");
  }
  return OkStatus();
}

}  // namespace vmf
