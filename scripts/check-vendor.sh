#!/usr/bin/env bash
# Verifies that the vendored files are exactly the ones recorded in assets/vendor/SHA256SUMS
# (written by scripts/vendor-socketio.sh). Exits non-zero on any mismatch or missing file.
set -euo pipefail

vendor_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/assets/vendor"
cd "$vendor_dir"

if [[ ! -s SHA256SUMS ]]; then
    echo "error: assets/vendor/SHA256SUMS is missing or empty" >&2
    exit 1
fi
if ! grep -q ' socket.io.min.js$' SHA256SUMS; then
    echo "error: assets/vendor/SHA256SUMS does not list socket.io.min.js" >&2
    exit 1
fi

if sha256sum --check --strict SHA256SUMS; then
    version="$(sed -n 's/^Version: //p' README.md | head -n 1)"
    echo "vendored socket.io-client ${version:-(version unknown)} matches SHA256SUMS"
else
    echo "error: vendored files differ from assets/vendor/SHA256SUMS;" \
        "run scripts/vendor-socketio.sh to restore them" >&2
    exit 1
fi
