#!/bin/sh
# Sets up a fresh Debian/Ubuntu machine to build, run and test Weft:
#   - Debian packages: iproute2 (the router configures its device with `ip`), build tools for the
#     native addon, and the tools the tests and benchmarks drive (ping, iperf3, dig, nft, socat,
#     wireguard-go + wg, nebula, dnsmasq and dnsperf for DNS; docker.io and debootstrap for the Docker
#     e2e and its local base image; podman for the podman e2e; containerd, Debian's reference CNI
#     plugins and a static busybox for the CNI/CRI e2e, with golang-go while cnitool is not built yet; chromium and a font for the
#     browser e2e of the web page) - only those that are
#     missing, only when run as root;
#   - cnitool (built from Debian's source package, cached in /var/cache/weft-ci) and the CRI proto;
#   - npm dependencies (npm ci), the native TUN/UDP addon (node-gyp), the TypeScript build.
# Idempotent: a second run does little.
set -eu
cd "$(dirname "$0")/.."

PKGS="iproute2 ethtool iputils-ping iperf3 dnsutils dnsmasq-base dnsperf nftables socat wireguard-go wireguard-tools nebula python3 make g++ procps docker.io debootstrap podman containerd containernetworking-plugins busybox-static chromium fonts-dejavu-core"
CNITOOL=/var/cache/weft-ci/cnitool-1.1.2-1
[ -x "$CNITOOL" ] || PKGS="$PKGS golang-go"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null
  fi
else
  echo "setup: not root (or no apt-get): skipping Debian packages ($PKGS)"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts
fi
npm run -s build:native
npm run -s build
if [ "$(id -u)" = 0 ]; then
  # Only the CNI/CRI e2e need these; each says why it skips when one is missing.
  [ -x "$CNITOOL" ] || sh cni/build-cnitool.sh >/dev/null || echo "setup: cannot build cnitool: the cni e2e will skip"
  sh cni/fetch-cri-proto.sh >/dev/null || echo "setup: cannot get the CRI proto: the cri e2e will skip"
fi
echo "setup: done (weft CLI: node dist/weft.mjs, or npm link)"
