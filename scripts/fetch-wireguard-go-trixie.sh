#!/bin/sh
# fetch-wireguard-go-trixie.sh: puts Debian trixie's wireguard-go (0.0.20231211, TUN and UDP
# offloads) beside this bookworm machine's own, for the tunnel bench's comparison row, and prints
# the path of its binary. Nothing is installed into the system: apt runs with a private
# sources.list, state, cache and lists under the cache dir, `apt-get download` fetches the .deb and
# `dpkg-deb -x` unpacks it there. A binary already unpacked is reused.
#
#   sh scripts/fetch-wireguard-go-trixie.sh            # prints e.g. /var/cache/weft-bench/wireguard-go-trixie/root/usr/bin/wireguard-go
#   WEFT_BENCH_CACHE=/tmp/x sh scripts/fetch-wireguard-go-trixie.sh
#
# The mirror is the one this machine's apt already uses for Debian (first deb.debian.org-style URI
# found in /etc/apt/sources.list*), so no new host is contacted. Exit status 1 with one line on
# stderr when the download is refused or the package cannot be unpacked.
set -eu

cache="${WEFT_BENCH_CACHE:-/var/cache/weft-bench}/wireguard-go-trixie"
bin="$cache/root/usr/bin/wireguard-go"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

# The Debian mirror this machine uses: a URIs: line (deb822) or a deb line naming .../debian.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' \
    -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\/debian\)\/*[[:space:]].*/\2/p' |
  head -n 1)
mirror="${mirror:-http://deb.debian.org/debian}"

apt_dir="$cache/apt"
mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$cache/deb"
# An empty package status of our own: what this machine has installed plays no part.
: >"$apt_dir/state/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb [signed-by=$keyring] $mirror trixie main" >"$apt_dir/sources.list"

set -- -o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status" \
  -o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::SourceList=$apt_dir/sources.list" \
  -o "Dir::Etc::SourceParts=/dev/null" -o "APT::Architecture=$(dpkg --print-architecture)"

if ! out=$(apt-get "$@" -q --error-on=any update 2>&1); then
  echo "fetch-wireguard-go-trixie: apt-get update of trixie from $mirror failed: $(echo "$out" | grep -E '^(E|W):' | head -n 2 | tr '\n' ' ')" >&2
  exit 1
fi
if ! out=$(cd "$cache/deb" && apt-get "$@" -q download wireguard-go/trixie 2>&1); then
  echo "fetch-wireguard-go-trixie: apt-get download wireguard-go (trixie) failed: $(echo "$out" | grep -E '^(E|W):' | head -n 2 | tr '\n' ' ')" >&2
  exit 1
fi
deb=$(ls -t "$cache"/deb/wireguard-go_*.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
  echo "fetch-wireguard-go-trixie: apt-get download left no wireguard-go .deb in $cache/deb" >&2
  exit 1
fi
rm -rf "$cache/root.tmp"
dpkg-deb -x "$deb" "$cache/root.tmp"
rm -rf "$cache/root"
mv "$cache/root.tmp" "$cache/root"
if [ ! -x "$bin" ]; then
  echo "fetch-wireguard-go-trixie: $deb has no usr/bin/wireguard-go" >&2
  exit 1
fi
echo "$bin"
