#!/usr/bin/env bash
# Vendor the browser Socket.IO client from the npm registry into the portal's static files.
# Idempotent: does nothing when the pinned version is already in place (no network needed then).
set -euo pipefail

VERSION="4.8.1"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/merchant_portal/static/vendor/socket.io.min.js"
STAMP="$DEST.version"

if [[ -s "$DEST" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  exit 0
fi

command -v npm >/dev/null || { echo "vendor_js.sh: npm not found; install Node.js/npm" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# npm pack fetches the published tarball only: no install scripts run, no node_modules.
(cd "$TMP" && npm pack --silent "socket.io-client@$VERSION" >/dev/null)
tar -xzf "$TMP"/socket.io-client-"$VERSION".tgz -C "$TMP"
SRC="$TMP/package/dist/socket.io.min.js"
[[ -s "$SRC" ]] || { echo "vendor_js.sh: $SRC missing from the package" >&2; exit 1; }
mkdir -p "$(dirname "$DEST")"
cp "$SRC" "$DEST.tmp" && mv "$DEST.tmp" "$DEST"
echo "$VERSION" >"$STAMP"
echo "vendored socket.io-client $VERSION -> ${DEST#"$ROOT"/}"
