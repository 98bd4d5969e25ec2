#!/bin/sh
# Builds the router image from the Dockerfile with no registry at all (no image registry, no npm
# registry inside the build) and caches it by its inputs:
#
#   1. the local base images (scripts/build-base-image.sh: Debian bookworm + this machine's Node);
#   2. a build context made here: the sources the Dockerfile copies, plus this machine's npm
#      cache as npm-cache/ (DEPS=cache: `npm ci --offline` in the build);
#   3. `docker build` (BuildKit), then `docker save` into $WEFT_BASE_CACHE/router-<key>.tar
#      (podman-router-<key>.tar when $DOCKER is podman: each engine's own build is what it loads).
#
# The key hashes the context (sources, lockfile, Dockerfile; the npm cache only through the lockfile),
# this script and the base key, so an unchanged tree costs one `docker load` (a few seconds), also on a fresh
# engine. Usage: sh scripts/build-image.sh [TAG]  (default weft:local; prints the tag).
# DOCKER (default /usr/bin/docker when present: the engine's own 20.10 client has BuildKit built in;
# DOCKER=podman works too).
set -eu
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

TAG=${1:-weft:local}
CACHE=${WEFT_BASE_CACHE:-/var/cache/weft-ci}
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER
log() { echo "build-image: $*" >&2; }

NPM_CACHE=$(npm config get cache)/_cacache
[ -d "$NPM_CACHE" ] || { log "no npm cache at $NPM_CACHE (run npm ci first)"; exit 1; }
mkdir -p "$CACHE"
WORK=$(mktemp -d /tmp/weft-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM

BASE_KEY=$(sh scripts/build-base-image.sh --key-only)
# Deterministic tar of the source tree (what .dockerignore lets in, less what cannot change the
# image): the same tree gives the same bytes, hence the same key.
tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --exclude=./.git --exclude=./node_modules --exclude=./dist --exclude=./coverage --exclude=./.ci \
  --exclude=./scripts --exclude=./.vitest-report.json --exclude=build \
  --exclude='*.test.ts' --exclude='*.e2e.ts' --exclude='*.md' -f "$WORK/src.tar" .
KEY=$( { sha256sum <"$WORK/src.tar"; echo "$BASE_KEY"; cat "$SELF"; } | sha256sum | cut -c1-16)
# Podman keeps a cache of its own: a tarball built by Docker would prove nothing about `podman build`.
PREFIX=router
if "$DOCKER" --version 2>/dev/null | grep -qi podman; then PREFIX=podman-router; fi
IMAGE_TAR=$CACHE/$PREFIX-$KEY.tar

if [ -s "$IMAGE_TAR" ]; then
  t0=$(date +%s)
  "$DOCKER" load -q -i "$IMAGE_TAR" >/dev/null
  "$DOCKER" tag "weft-router:$KEY" "$TAG"
  log "cached image loaded from $IMAGE_TAR in $(( $(date +%s) - t0 )) s"
  echo "$TAG"
  exit 0
fi

t0=$(date +%s)
# The build installs from the npm cache alone: top it up (from the registry, on this host) with
# any tarball of the lockfile it lacks, found by the lockfile's integrity in cacache's layout.
missing=$(node -e '
  const fs = require("fs"), path = require("path");
  const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
  const out = [];
  for (const [k, v] of Object.entries(lock.packages ?? {})) {
    if (k === "" || v.link || v.optional || !v.integrity?.startsWith("sha512-")) continue;
    const hex = Buffer.from(v.integrity.slice(7), "base64").toString("hex");
    const file = path.join(process.argv[1], "content-v2/sha512", hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
    if (!fs.existsSync(file)) out.push(`${v.name ?? k.replace(/^.*node_modules\//, "")}@${v.version}`);
  }
  console.log(out.join(" "));
' "$NPM_CACHE")
if [ -n "$missing" ]; then
  log "adding to the npm cache: $missing"
  # shellcheck disable=SC2086
  npm cache add $missing >&2
fi
set -- $(sh scripts/build-base-image.sh)
RUN_IMAGE=$1
BUILD_IMAGE=$2
# The context: the sources (with .dockerignore), then the npm cache as npm-cache/ (hard links: no copy).
mkdir "$WORK/ctx"
tar -x -f "$WORK/src.tar" -C "$WORK/ctx"
cp .dockerignore "$WORK/ctx/"
# An offline `npm ci` finds tarballs by `resolved` + `integrity` alone; a lockfile written without
# `resolved` would make it ask for packuments. Fill in the default registry's tarball URLs.
node -e '
  const fs = require("fs");
  const file = process.argv[1];
  const lock = JSON.parse(fs.readFileSync(file, "utf8"));
  for (const [k, v] of Object.entries(lock.packages ?? {})) {
    if (k === "" || v.link || v.resolved || !v.version || !k.includes("node_modules/")) continue;
    const name = v.name ?? k.slice(k.lastIndexOf("node_modules/") + "node_modules/".length);
    v.resolved = `https://registry.npmjs.org/${name}/-/${name.split("/").pop()}-${v.version}.tgz`;
  }
  fs.writeFileSync(file, JSON.stringify(lock, null, 2) + "\n");
' "$WORK/ctx/package-lock.json"
cp -al "$NPM_CACHE" "$WORK/ctx/npm-cache" 2>/dev/null || cp -a "$NPM_CACHE" "$WORK/ctx/npm-cache"
DOCKER_BUILDKIT=1 "$DOCKER" build -q --network none -t "weft-router:$KEY" -t "$TAG" \
  --build-arg BASE="$RUN_IMAGE" --build-arg BUILD_BASE="$BUILD_IMAGE" --build-arg DEPS=cache \
  "$WORK/ctx" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; exit 1; }
"$DOCKER" save -o "$IMAGE_TAR.tmp" "weft-router:$KEY"
mv "$IMAGE_TAR.tmp" "$IMAGE_TAR"
for f in "$CACHE/$PREFIX"-*.tar; do [ "$f" = "$IMAGE_TAR" ] || rm -f "$f"; done
log "built $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - t0 )) s; cached as $IMAGE_TAR"
echo "$TAG"
