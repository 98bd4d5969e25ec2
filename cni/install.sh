#!/bin/sh
# install.sh BIN_DIR [NODE] [MAIN]: installs the `weft` CNI plugin into a runtime's CNI bin
# directory (e.g. /opt/cni/bin) as a two-line shim that runs MAIN (default: this package's
# dist/cni/main.js) with NODE (default: the node on PATH), both by absolute path, so the plugin
# works under a runtime whose PATH has no node. Written to a temporary file and renamed, so a
# runtime never executes a half-written plugin.
set -eu
BIN_DIR=${1:?usage: install.sh BIN_DIR [NODE] [MAIN]}
NODE=${2:-$(command -v node)}
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=${3:-$(cd "$HERE/.." && pwd)/dist/cni/main.js}
[ -f "$MAIN" ] || { echo "install.sh: $MAIN not found (npm run build)" >&2; exit 1; }
mkdir -p "$BIN_DIR"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$NODE" "$MAIN" > "$BIN_DIR/.weft.tmp"
chmod 755 "$BIN_DIR/.weft.tmp"
mv "$BIN_DIR/.weft.tmp" "$BIN_DIR/weft"
echo "$BIN_DIR/weft"
