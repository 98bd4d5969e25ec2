# Weft router container: one per host.
#
#   docker build -t weft .
#   docker run -d --name weft --network host --pid host --cap-add NET_ADMIN --cap-add SYS_ADMIN \
#     --security-opt systempaths=unconfined --device /dev/net/tun \
#     -v weft-state:/var/lib/weft -v /var/run/docker.sock:/var/run/docker.sock weft 192.168.1.2
#
# The router runs in the host's network namespace (--network host), opens a TUN device
# (/dev/net/tun + NET_ADMIN) and keeps its peer name, targets, address ring and attached
# containers in the state volume. `weft attach CONTAINER` enters a container's network namespace
# by its pid (--pid host, SYS_ADMIN for setns) and writes the veth's sysctls (systempaths=unconfined
# makes /proc/sys writable; --privileged does too where the host allows it). The engine's socket
# lets it find containers by name and follow their restarts. Arguments are peers and `weft launch`
# flags; `docker stop` sends SIGTERM, on which the router stops cleanly. Talk to it with
# `docker exec weft weft status`. As the Docker network plugin (`docker network create -d weft`),
# add `-v /run/docker/plugins:/run/docker/plugins` and the flag `--docker-plugin`: the router makes
# weft.sock there, where dockerd looks for plugins.
#
# Base images (build arguments):
#   BASE        the runtime image: Debian bookworm with Node >= 20 (default the official node image)
#   BUILD_BASE  the image the build stage compiles in (default BASE; tools it lacks are apt-installed)
#   DEPS        registry: `npm ci` from the registry; cache: `npm ci --offline` from an npm cache
#               shipped in the build context as npm-cache/ (no network in the build at all)
# Where no image registry is reachable, scripts/build-image.sh builds local bases from Debian
# packages (scripts/build-base-image.sh) and passes all three.
ARG BASE=node:22-bookworm-slim
ARG BUILD_BASE=${BASE}
ARG DEPS=registry

# ---- build tools: python3, make and g++ for the native addon (baked into a local build base) ----
FROM ${BUILD_BASE} AS tools
RUN if ! command -v g++ >/dev/null || ! command -v make >/dev/null || ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 make g++ \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY package.json package-lock.json ./

# ---- npm dependencies, from the registry or from a shipped cache ----
FROM tools AS deps-registry
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM tools AS deps-cache
COPY npm-cache /root/.npm/_cacache
RUN npm ci --ignore-scripts --no-audit --no-fund --offline && rm -rf /root/.npm

# ---- build: TypeScript and the native addon (against the base's own Node headers) ----
# The whole source tree (.dockerignore keeps out node_modules, dist, tests, docs), so a new
# top-level folder that tsconfig.build.json compiles needs no change here.
FROM deps-${DEPS} AS build
COPY . .
RUN rm -rf npm-cache \
 && for d in /usr/local /usr; do \
      if [ -f "$d/include/node/common.gypi" ]; then export npm_config_nodedir="$d"; break; fi; \
    done \
 && npm run build:native && npm run build && npm prune --omit=dev

# ---- runtime: Node, iproute2, the compiled router ----
FROM ${BASE}
# nftables: `--masquerade` (pod egress) keeps its rule in the router's own table.
RUN if ! command -v ip >/dev/null || ! command -v ping >/dev/null || ! command -v nft >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends iproute2 iputils-ping nftables \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /opt/weft
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY --from=build /src/router/tun/native/build/Release/weft_native.node router/tun/native/build/Release/weft_native.node
# dist/weft.mjs is the one-file build (one module to load: less memory than dist/control/cli.js).
RUN ln -s /opt/weft/dist/weft.mjs /usr/local/bin/weft
VOLUME /var/lib/weft
# Two malloc arenas and large blocks mapped apart, as `weft launch` gives a background router
# (DAEMON_MALLOC_ARENA_MAX, DAEMON_MALLOC_MMAP_THRESHOLD in control/cli.ts).
ENV WEFT_STATE_DIR=/var/lib/weft WEFT_API_SOCKET=/run/weft/weft.sock MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536
STOPSIGNAL SIGTERM
# The young generation capped from the start and one V8 worker thread, as `weft launch` does for a
# background router (DAEMON_NODE_ARGS).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--v8-pool-size=1", "/opt/weft/dist/weft.mjs", "launch", "--foreground"]
