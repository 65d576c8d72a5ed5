#!/usr/bin/env bash
# Checks that every #include "FOLDER/..." in src/ and agent/ goes down the
# layers, never up or sideways (Chromium's DEPS rule, as an allow-list):
#
#   common <- ttrpc <- hypervisor <- vm <- factory <- config <- daemon <- bench, soak <- cli
#                 \<- proxy          vm <- container <- shim, cli  (daemon <- shim)
#
# containerd/ is the C++ generated from proto/containerd/ (containerd's API).
#
# The guest agent (agent/) is linked statically into the guest: it may use
# only the guest-safe headers listed below. Prints each upward include with
# its file and line; exits 1 if there is any.
#
#   scripts/check-layers.sh [SOURCE_DIR]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"

declare -A allowed=(
  [common]="common"
  [ttrpc]="common ttrpc"
  [hypervisor]="common hypervisor"
  [vm]="common ttrpc hypervisor vm"
  [proxy]="common ttrpc proxy"
  [factory]="common hypervisor vm factory"
  [config]="common hypervisor vm factory config"
  [daemon]="common ttrpc hypervisor vm factory config daemon"
  [bench]="common ttrpc hypervisor vm factory config daemon bench"
  [soak]="common ttrpc hypervisor vm factory config daemon soak"
  [container]="common ttrpc hypervisor vm containerd container"
  [shim]="common ttrpc hypervisor vm factory config daemon containerd container shim"
  [cli]="common ttrpc hypervisor vm factory config daemon container bench soak cli"
)
# What the guest agent may include from src/ (plain, dependency-free code).
agent_headers="common/status.h common/ids.h common/fd.h ttrpc/frame.h ttrpc/wire.h ttrpc/sync.h"

bad=0
report() {
  echo "layer violation: $1" >&2
  bad=1
}

for dir in src/*/; do
  folder=$(basename "$dir")
  if [ -z "${allowed[$folder]+x}" ]; then
    report "src/$folder/ is not in scripts/check-layers.sh: give it a place in the layers"
    continue
  fi
  while IFS=: read -r file line text; do
    inc=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$text")
    case " ${allowed[$folder]} " in
      *" $inc "*) ;;
      *) report "$file:$line includes $inc/ (src/$folder may include: ${allowed[$folder]})" ;;
    esac
  done < <(grep -rnE '^#include "[a-z_]+/' "$dir" || true)
done

while IFS=: read -r file line text; do
  header=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$text")
  case " $agent_headers " in
    *" $header "*) ;;
    *) report "$file:$line includes $header (the guest agent may include: $agent_headers)" ;;
  esac
done < <(grep -rnE '^#include "[a-z_]+/' agent || true)

if [ "$bad" = 0 ]; then
  echo "layers: every include goes down the layers"
fi
exit "$bad"
