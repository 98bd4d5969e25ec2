#!/bin/sh
# build-cnitool.sh: builds `cnitool` (the CNI project's reference runtime driver, which no Debian
# binary package ships) from Debian's golang-github-appc-cni source package with Debian's Go, and
# caches it as /var/cache/weft-ci/cnitool-VERSION (VERSION: the source package's). Prints the path.
# Needs golang-go; fetches the source with a private deb-src list (the machine's apt config is not
# changed). A cached binary is printed at once, with no Go and no network.
set -eu
CACHE=${WEFT_CI_CACHE:-/var/cache/weft-ci}
VERSION=${CNITOOL_DEBIAN_VERSION:-1.1.2-1}
OUT="$CACHE/cnitool-$VERSION"
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "build-cnitool: go not found (apt-get install golang-go)" >&2; exit 1; }
W=$(mktemp -d /tmp/weft-cnitool.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"
mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/src" "$W/gopath/src/github.com/containernetworking"
echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main' > "$W/apt/src.list"
APTO="-o Dir::Etc::SourceList=$W/apt/src.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$W/apt/lists -o Dir::Cache=$W/apt/cache"
# shellcheck disable=SC2086
apt-get $APTO update -q >/dev/null
# shellcheck disable=SC2086
(cd "$W/src" && apt-get $APTO source --download-only "golang-github-appc-cni=$VERSION" >/dev/null 2>&1)
tar -C "$W/src" -xf "$W"/src/golang-github-appc-cni_*.orig.tar.xz
ln -s "$(ls -d "$W"/src/golang-github-appc-cni-*/)" "$W/gopath/src/github.com/containernetworking/cni"
# GOPATH mode: cnitool imports only the cni tree itself, so no module download is needed.
(cd "$W/gopath/src/github.com/containernetworking/cni" &&
  GOCACHE="$W/gocache" GO111MODULE=off GOPATH="$W/gopath" go build -o "$W/cnitool" ./cnitool)
mkdir -p "$CACHE"
mv "$W/cnitool" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$OUT"
