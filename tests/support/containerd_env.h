// The tests' name for the private containerd (bench/private_containerd.h),
// which the bench's container modes use too.
#pragma once

#include "bench/private_containerd.h"

namespace vmf::test {
using namespace vmf::ctrd;  // NOLINT: the tests spell these test::X
}  // namespace vmf::test
