# Weft router container: one per host.
#
#   docker build -t weft .
#   docker run -d --name weft --network host --cap-add NET_ADMIN --device /dev/net/tun \
#     -v weft-state:/var/lib/weft weft 192.168.1.2
#
# The router runs in the host's network namespace (--network host), opens a TUN device
# (/dev/net/tun + NET_ADMIN) and keeps its peer name, targets and exposed addresses in the
# state volume. Arguments are peers and `weft launch` flags. Talk to it with
# `docker exec weft weft status`.

# ---- build: TypeScript and the native addon ----
FROM node:22-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY common common
COPY router router
COPY control control
COPY bench bench
COPY e2e e2e
RUN npm run build:native && npm run build && npm prune --omit=dev

# ---- runtime: Node, iproute2, the compiled router ----
FROM node:22-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 iputils-ping \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/weft
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY --from=build /src/router/tun/native/build/Release/weft_native.node router/tun/native/build/Release/weft_native.node
RUN ln -s /opt/weft/dist/control/cli.js /usr/local/bin/weft
VOLUME /var/lib/weft
ENV WEFT_STATE_DIR=/var/lib/weft
ENTRYPOINT ["weft", "launch", "--foreground"]
