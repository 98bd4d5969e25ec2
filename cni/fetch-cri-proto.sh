#!/bin/sh
# fetch-cri-proto.sh: extracts the CRI v1 API (k8s.io/cri-api runtime/v1/api.proto, which the
# kubelet speaks to containerd) from Debian's containerd source package, drops its gogoproto lines
# (options protobufjs does not need), and caches it as /var/cache/weft-ci/cri-api-v1-VERSION.proto.
# Prints the path. Uses a private deb-src list; the machine's apt config is not changed.
set -eu
CACHE=${WEFT_CI_CACHE:-/var/cache/weft-ci}
VERSION=${CONTAINERD_DEBIAN_VERSION:-$(dpkg-query -W -f='${Version}' containerd 2>/dev/null || echo 1.6.20~ds1-1+deb12u3)}
OUT="$CACHE/cri-api-v1-$(echo "$VERSION" | tr -c 'A-Za-z0-9.\n' '_').proto"
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi
W=$(mktemp -d /tmp/weft-criproto.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/src"
echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' > "$W/apt/src.list"
APTO="-o Dir::Etc::SourceList=$W/apt/src.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$W/apt/lists -o Dir::Cache=$W/apt/cache"
# shellcheck disable=SC2086
apt-get $APTO update -q >/dev/null
# shellcheck disable=SC2086
(cd "$W/src" && apt-get $APTO source --download-only "containerd=$VERSION" >/dev/null 2>&1)
tar -C "$W/src" -xf "$W"/src/containerd_*.orig.tar.xz --wildcards '*/vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto'
mkdir -p "$CACHE"
sed '/gogoproto/d' "$W"/src/containerd-*/vendor/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
