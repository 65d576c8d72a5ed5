#!/usr/bin/env bash
# Builds the vmfactory guest image: a Debian kernel (unpacked from its .deb,
# never installed) and an uncompressed newc initramfs whose /init is the
# static vmfactory-agent, with busybox and the virtio modules the agent loads.
#
#   guest/build-image.sh --agent build/bin/vmfactory-agent --out build/guest \
#       --cache ~/.cache/vmfactory --kernel-package linux-image-cloud-amd64 \
#       --modules guest/modules.txt
#
# Produces OUT/vmlinuz, OUT/initramfs.cpio, OUT/kernel-version, OUT/kernel-package.
set -euo pipefail

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

AGENT="" OUT="" CACHE="" KPKG="" MODULES=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --agent) AGENT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --cache) CACHE="$2"; shift 2 ;;
    --kernel-package) KPKG="$2"; shift 2 ;;
    --modules) MODULES="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ -n "$AGENT" && -n "$OUT" && -n "$CACHE" && -n "$KPKG" && -n "$MODULES" ]] ||
  die "usage: $0 --agent PATH --out DIR --cache DIR --kernel-package NAME --modules FILE"
[[ -f "$AGENT" ]] || die "agent binary not found: $AGENT"
[[ -f "$MODULES" ]] || die "modules list not found: $MODULES"
for tool in apt-cache apt-get dpkg cpio readelf; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

mkdir -p "$OUT" "$CACHE"
OUT="$(cd "$OUT" && pwd)"
CACHE="$(cd "$CACHE" && pwd)"
AGENT="$(cd "$(dirname "$AGENT")" && pwd)/$(basename "$AGENT")"

# A static binary has no program interpreter (PT_INTERP).
is_static() {
  readelf -lW "$1" 2>/dev/null | grep -q 'LOAD' || return 1
  ! readelf -lW "$1" 2>/dev/null | grep -q 'INTERP'
}

# ---------------------------------------------------------------- kernel package
resolve_kernel_package() {
  local name="$1" deps
  if ! apt-cache show "$name" >/dev/null 2>&1; then
    if [[ -z "$(apt-cache pkgnames 2>/dev/null | head -n1)" ]]; then
      die "the apt package lists are empty; run 'apt-get update' (as root) and retry"
    fi
    die "apt knows no package named $name"
  fi
  # Already a concrete kernel (ships boot/vmlinuz-*)? It depends on no other linux-image-*.
  deps="$(apt-cache depends "$name" 2>/dev/null |
          awk '/^ *(\|)?Depends: linux-image-[0-9]/ {print $2}' | head -n1)"
  if [[ -n "$deps" ]]; then echo "$deps"; else echo "$name"; fi
}

PKG="$(resolve_kernel_package "$KPKG")"
log "kernel package: $KPKG -> $PKG"

deb="$(ls "$CACHE/${PKG}"_*.deb 2>/dev/null | head -n1 || true)"
if [[ -z "$deb" ]]; then
  log "downloading $PKG into $CACHE"
  (cd "$CACHE" && apt-get download "$PKG") || die "apt-get download $PKG failed"
  deb="$(ls "$CACHE/${PKG}"_*.deb 2>/dev/null | head -n1 || true)"
  [[ -n "$deb" ]] || die "apt-get download left no ${PKG}_*.deb in $CACHE"
else
  log "using cached $(basename "$deb")"
fi

UNPACKED="$CACHE/unpacked/$PKG"
if [[ ! -f "$UNPACKED/.done" ]]; then
  log "unpacking $(basename "$deb")"
  rm -rf "$UNPACKED"
  mkdir -p "$UNPACKED"
  dpkg -x "$deb" "$UNPACKED"
  touch "$UNPACKED/.done"
fi

vmlinuz="$(ls "$UNPACKED"/boot/vmlinuz-* 2>/dev/null | head -n1 || true)"
[[ -n "$vmlinuz" ]] || die "$PKG has no boot/vmlinuz-* (not a kernel image package?)"
KVER="${vmlinuz##*/vmlinuz-}"
MODDIR="$UNPACKED/lib/modules/$KVER"
[[ -d "$MODDIR" ]] || die "$PKG has no lib/modules/$KVER"

# ---------------------------------------------------------------- initramfs tree
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmf-guest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc/vmfactory,lib/modules}
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"

# /init: the agent, which must be static (nothing else in the image has a libc).
is_static "$AGENT" || die "$AGENT is not a static binary (it has a PT_INTERP); link it with -static"
install -m 0755 "$AGENT" "$ROOT/init"
if command -v strip >/dev/null; then strip --strip-debug "$ROOT/init" 2>/dev/null || true; fi

# busybox from busybox-static.
BUSYBOX=/bin/busybox
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found: install Debian's busybox-static package"
is_static "$BUSYBOX" || die "$BUSYBOX is not static: install busybox-static (not busybox)"
install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
napplets=0
while read -r applet; do
  [[ -n "$applet" && "$applet" != busybox ]] || continue
  [[ -e "$ROOT/bin/$applet" ]] && continue
  ln -s busybox "$ROOT/bin/$applet"
  napplets=$((napplets + 1))
done < <("$BUSYBOX" --list)

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
EOF

# ---------------------------------------------------------------- modules
# Finds NAME's module file (dashes and underscores are equivalent).
find_module() {
  local name="$1" alt
  alt="$(echo "$name" | tr '_-' '-_')"
  find "$MODDIR" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \
                    -o -name "$alt.ko" -o -name "$alt.ko.xz" -o -name "$alt.ko.zst" \) -print -quit
}

# Uncompressed copy of a module file in $WORK/mods, printed.
plain_module() {
  local src="$1" rel dst
  rel="${src#"$MODDIR"/}"
  rel="${rel%.xz}"
  rel="${rel%.zst}"
  dst="$WORK/mods/$rel"
  if [[ ! -f "$dst" ]]; then
    mkdir -p "$(dirname "$dst")"
    case "$src" in
      *.xz) xz -dc "$src" >"$dst" ;;
      *.zst) zstd -qdc "$src" >"$dst" ;;
      *) cp "$src" "$dst" ;;
    esac
  fi
  echo "$dst"
}

module_depends() {
  local file="$1"
  if command -v modinfo >/dev/null; then
    modinfo -F depends "$file"
  elif command -v objcopy >/dev/null; then
    # The .modinfo section is NUL-separated key=value strings.
    objcopy -O binary --only-section=.modinfo "$file" /dev/stdout 2>/dev/null |
      tr '\0' '\n' | sed -n 's/^depends=//p'
  else
    die "need modinfo (kmod) or objcopy (binutils) to read module dependencies"
  fi
}

declare -A SEEN=()
ORDER=()
add_module() {
  local name="$1" src file dep
  [[ -n "${SEEN[$name]:-}" ]] && return 0
  SEEN[$name]=1
  src="$(find_module "$name")"
  if [[ -z "$src" ]]; then
    log "note: module $name not found in $PKG: assuming it is built in"
    return 0
  fi
  file="$(plain_module "$src")"
  for dep in $(module_depends "$file" | tr ',' ' '); do
    add_module "$dep"
  done
  ORDER+=("$file")
}

while read -r line; do
  line="${line%%#*}"
  line="$(echo "$line" | tr -d '[:space:]')"
  [[ -n "$line" ]] && add_module "$line"
done <"$MODULES"

: >"$ROOT/etc/vmfactory/modules"
for file in "${ORDER[@]}"; do
  rel="lib/modules/$KVER/${file#"$WORK/mods/"}"
  mkdir -p "$ROOT/$(dirname "$rel")"
  install -m 0644 "$file" "$ROOT/$rel"
  echo "$rel" >>"$ROOT/etc/vmfactory/modules"
done
log "modules (load order): $(sed 's#.*/##' "$ROOT/etc/vmfactory/modules" | tr '\n' ' ')"

# ---------------------------------------------------------------- pack
CPIO_FLAGS=(-o -H newc --quiet)
if cpio --help 2>&1 | grep -q -- --reproducible; then CPIO_FLAGS+=(--reproducible); fi
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio "${CPIO_FLAGS[@]}" -R 0:0) \
  >"$OUT/initramfs.cpio.tmp"
mv -f "$OUT/initramfs.cpio.tmp" "$OUT/initramfs.cpio"
cp -f "$vmlinuz" "$OUT/vmlinuz.tmp"
mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel-version"
echo "$PKG" >"$OUT/kernel-package"

size() { du -h "$1" | cut -f1; }
log "built $OUT/vmlinuz ($(size "$OUT/vmlinuz"), $KVER) and $OUT/initramfs.cpio ($(size "$OUT/initramfs.cpio"), ${#ORDER[@]} modules, $napplets busybox applets)"
