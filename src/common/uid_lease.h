// UidLease: a uid (with the gid of the same number) taken from a configured
// range for one VM, so that no two VMs, nor a VM and a user of the machine,
// share an identity. A lease is a file DIR/<uid> naming its owner (the VM's
// runtime dir); a lease whose owner is gone is stale and taken again.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/status.h"

namespace vmf {

class UidLease {
 public:
  UidLease() = default;
  UidLease(UidLease&& o) noexcept;
  UidLease& operator=(UidLease&& o) noexcept;
  UidLease(const UidLease&) = delete;
  UidLease& operator=(const UidLease&) = delete;
  ~UidLease();

  // Takes a free uid in [first, first + count) for `owner` (an existing
  // path; the lease is stale once it is gone). RESOURCE_EXHAUSTED when
  // every uid of the range is leased.
  static Result<UidLease> Acquire(const std::string& dir, uint32_t first, uint32_t count,
                                  const std::string& owner);
  // Takes over the lease of `uid` held for `owner` (a VM handed over by
  // another process); FAILED_PRECONDITION if it is not held for owner.
  static Result<UidLease> Adopt(const std::string& dir, uid_t uid, const std::string& owner);

  bool valid() const { return !path_.empty(); }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return static_cast<gid_t>(uid_); }
  // Gives the uid back; idempotent.
  void Release();
  // Keeps the lease after we are gone (the VM was handed to another process).
  void Detach() { path_.clear(); }

 private:
  UidLease(std::string path, uid_t uid) : path_(std::move(path)), uid_(uid) {}
  std::string path_;
  uid_t uid_ = 0;
};

// Checks a uid range: not 0, no overflow, and no user or group of this
// machine (from the passwd and group databases) inside it.
Status CheckUidRange(uint32_t first, uint32_t count);

}  // namespace vmf
