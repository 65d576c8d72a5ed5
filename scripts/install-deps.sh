#!/usr/bin/env bash
# Installs what vmfactory needs to build, test and run, from Debian 12's
# packages. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git file
  g++ clang-format clang-tidy
  protobuf-compiler libprotobuf-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libtomlplusplus-dev
  libasio-dev libcpp-httplib-dev
  libseccomp-dev libssl-dev  # the proxy's seccomp filter; template digests (SHA-256)
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  qemu-system-x86 busybox-static cpio kmod
  qemu-utils gnuplot-nox  # vmfactory bench: qemu-img for qemu-loadvm, gnuplot for --plot
  containerd runc  # the containerd tests: a private containerd each (never the system's), runc as baseline
  libgrpc++-dev protobuf-compiler-grpc  # the CRI pod tests: a small CRI (gRPC) client, since crictl is not in Debian
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The guest image needs apt's package lists to find the kernel package.
need_update=0
[ ${#missing[@]} -gt 0 ] && need_update=1
[ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] && need_update=1

if [ "$need_update" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages: ${missing[*]:-(apt lists)}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all build and test dependencies are present"
