#!/usr/bin/env bash
# Re-vendors the node page's third-party JavaScript (agent/ui/vendor/) from the npm registry,
# checking each tarball against the integrity the registry publishes for that version.
# Only run by hand when upgrading; the build never fetches anything.
set -euo pipefail
cd "$(dirname "$0")/.."

XTERM_VERSION=6.0.0
XTERM_SHA512=TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==
NOVNC_VERSION=1.7.0
NOVNC_SHA512=ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA==

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # name url sha512-base64
    curl -sSfL -o "$tmp/$1.tgz" "$2"
    got=$(openssl dgst -sha512 -binary "$tmp/$1.tgz" | base64 -w0)
    if [ "$got" != "$3" ]; then
        echo "vendor-ui: $2 does not match its published sha512" >&2
        exit 1
    fi
    mkdir -p "$tmp/$1"
    tar xzf "$tmp/$1.tgz" -C "$tmp/$1"
}

fetch xterm "https://registry.npmjs.org/@xterm/xterm/-/xterm-$XTERM_VERSION.tgz" "$XTERM_SHA512"
fetch novnc "https://registry.npmjs.org/@novnc/novnc/-/novnc-$NOVNC_VERSION.tgz" "$NOVNC_SHA512"

out=agent/ui/vendor
rm -rf "$out/xterm" "$out/novnc"
mkdir -p "$out/xterm" "$out/novnc/vendor" "$out/novnc/docs"
cp "$tmp/xterm/package/lib/xterm.mjs" "$tmp/xterm/package/css/xterm.css" \
    "$tmp/xterm/package/LICENSE" "$out/xterm/"
cp -r "$tmp/novnc/package/core" "$tmp/novnc/package/LICENSE.txt" "$tmp/novnc/package/AUTHORS" \
    "$out/novnc/"
cp -r "$tmp/novnc/package/vendor/pako" "$out/novnc/vendor/"
cp "$tmp/novnc/package/docs/LICENSE.MPL-2.0" "$out/novnc/docs/"
echo "vendor-ui: xterm $XTERM_VERSION and noVNC $NOVNC_VERSION in $out"
