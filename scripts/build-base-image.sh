#!/bin/sh
# Builds the local base images for the Dockerfile where no image registry is reachable:
#
#   weft-base-run:<key>    Debian bookworm (debootstrap minbase) + iproute2, iputils-ping, nftables,
#                          ca-certificates + this machine's Node >= 20 (/usr/bin/node)
#   weft-base-build:<key>  the same + python3, make, g++, npm and Node's headers (/usr/include/node),
#                          so the Dockerfile's build stage compiles TypeScript and the native addon offline
#
# Node: bookworm's own nodejs is 18 (bookworm-backports has no nodejs); trixie's 20 would drag
# trixie's libc into a bookworm rootfs. This machine's Node 20 is a plain bookworm-ABI binary
# (it needs only libc, libstdc++, libgcc_s, libm), so it is copied in as it is.
#
# The rootfs tarballs are cached by their inputs (this script, the node binary, npm, the Debian
# suite and mirror) in $WEFT_BASE_CACHE (default /var/cache/weft-ci): base-<key>-run.tar and
# base-<key>-build.tar. A cached run costs only the `docker import`s (a few seconds).
#
# Usage: sh scripts/build-base-image.sh [--no-import | --key-only]
#   Without --no-import the tarballs are imported into the engine `docker` talks to (DOCKER_HOST);
#   --key-only prints the cache key and does nothing else.
#   The last line of stdout is "RUN_IMAGE BUILD_IMAGE", e.g.
#     docker build --build-arg BASE=<RUN_IMAGE> --build-arg BUILD_BASE=<BUILD_IMAGE> ...
# Needs root, debootstrap and network access to the Debian mirror on a cold cache.
set -eu

SUITE=${WEFT_BASE_SUITE:-bookworm}
MIRROR=${WEFT_BASE_MIRROR:-http://deb.debian.org/debian}
CACHE=${WEFT_BASE_CACHE:-/var/cache/weft-ci}
DOCKER=${DOCKER:-docker}
RUN_PKGS="iproute2,iputils-ping,nftables,ca-certificates"
BUILD_PKGS="python3 make g++"
IMPORT=1
KEY_ONLY=0
case "${1:-}" in
  --no-import) IMPORT=0 ;;
  --key-only) KEY_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--no-import | --key-only]" >&2; exit 2 ;;
esac

NODE=$(command -v node)
NODE=$(readlink -f "$NODE")
NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || { echo "build-base-image: node >= 20 needed, found $($NODE --version)" >&2; exit 1; }
NPM_DIR=$(dirname "$(dirname "$NODE")")/lib/node_modules/npm
NODE_INC=$(dirname "$(dirname "$NODE")")/include/node
[ -f "$NPM_DIR/package.json" ] || { echo "build-base-image: npm not found at $NPM_DIR" >&2; exit 1; }
[ -f "$NODE_INC/node_api.h" ] || { echo "build-base-image: node headers not found at $NODE_INC" >&2; exit 1; }

KEY=$( { cat "$0"; sha256sum "$NODE"; cat "$NPM_DIR/package.json"; echo "$SUITE $MIRROR $RUN_PKGS $BUILD_PKGS"; } \
  | sha256sum | cut -c1-16)
[ "$KEY_ONLY" = 1 ] && { echo "$KEY"; exit 0; }
RUN_TAR=$CACHE/base-$KEY-run.tar
BUILD_TAR=$CACHE/base-$KEY-build.tar
RUN_IMAGE=weft-base-run:$KEY
BUILD_IMAGE=weft-base-build:$KEY

log() { echo "build-base-image: $*" >&2; }

if [ -s "$RUN_TAR" ] && [ -s "$BUILD_TAR" ]; then
  log "cached: $RUN_TAR $BUILD_TAR"
else
  command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  mkdir -p "$CACHE/debs"
  WORK=$(mktemp -d /tmp/weft-base.XXXXXX)
  cleanup() {
    for m in proc dev; do umount "$WORK/rootfs/$m" 2>/dev/null || true; done
    rm -rf "$WORK"
  }
  trap cleanup EXIT INT TERM
  t0=$(date +%s)
  R=$WORK/rootfs
  log "debootstrap $SUITE (minbase + $RUN_PKGS) ..."
  debootstrap --variant=minbase --include="$RUN_PKGS" --cache-dir="$CACHE/debs" "$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  install -m 0755 "$NODE" "$R/usr/bin/node"
  # Trim what a container never uses: docs, man pages, locales, apt lists and caches.
  rm -rf "$R/usr/share/doc"/* "$R/usr/share/man"/* "$R/usr/share/info"/* "$R/var/lib/apt/lists"/* \
    "$R/var/cache/apt"/*.bin "$R/var/cache/apt/archives"/*.deb "$R/var/log"/*.log
  find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + 2>/dev/null || true
  : >"$R/etc/resolv.conf"
  tar -C "$R" --numeric-owner -cf "$RUN_TAR.tmp" .
  mv "$RUN_TAR.tmp" "$RUN_TAR"
  log "runtime rootfs: $(du -sh "$RUN_TAR" | cut -f1) in $(( $(date +%s) - t0 )) s"

  # The build base: the same rootfs plus the compilers, npm and Node's headers.
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  mount -t proc proc "$R/proc"
  chroot "$R" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $BUILD_PKGS" \
    >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; exit 1; }
  umount "$R/proc"
  mkdir -p "$R/usr/lib/node_modules" "$R/usr/include"
  cp -a "$NPM_DIR" "$R/usr/lib/node_modules/npm"
  cp -a "$NODE_INC" "$R/usr/include/node"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/bin/npx"
  rm -rf "$R/var/lib/apt/lists"/* "$R/var/cache/apt"/*.bin "$R/var/cache/apt/archives"/*.deb "$R/usr/share/doc"/* "$R/usr/share/man"/*
  : >"$R/etc/resolv.conf"
  tar -C "$R" --numeric-owner -cf "$BUILD_TAR.tmp" .
  mv "$BUILD_TAR.tmp" "$BUILD_TAR"
  log "build rootfs: $(du -sh "$BUILD_TAR" | cut -f1) in $(( $(date +%s) - t0 )) s total"
  # Keep only this key's tarballs (and the .deb cache).
  for f in "$CACHE"/base-*.tar; do
    case "$f" in "$RUN_TAR" | "$BUILD_TAR") ;; *) rm -f "$f" ;; esac
  done
fi

if [ "$IMPORT" = 1 ]; then
  for pair in "$RUN_TAR $RUN_IMAGE" "$BUILD_TAR $BUILD_IMAGE"; do
    set -- $pair
    if ! "$DOCKER" image inspect "$2" >/dev/null 2>&1; then
      "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["node"]' "$1" "$2" >/dev/null
      log "imported $2"
    fi
  done
fi
echo "$RUN_IMAGE $BUILD_IMAGE"
