// The tests' name for the offline OCI image builder (bench/oci_image.h).
#pragma once

#include "bench/oci_image.h"

namespace vmf::test {
using namespace vmf::ctrd;  // NOLINT: the tests spell these test::X
}  // namespace vmf::test
