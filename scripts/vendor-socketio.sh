#!/usr/bin/env bash
# Refreshes the vendored socket.io browser client from the npm registry.
#
# Usage: scripts/vendor-socketio.sh [VERSION]
#   VERSION defaults to the one pinned in assets/vendor/README.md.
#
# The file is copied unmodified from the package tarball (`npm pack` checks the registry's
# integrity hash), then its checksum and the pinned version are rewritten so that
# scripts/check-vendor.sh and reviewers can tell exactly what is served.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor_dir="$repo_root/assets/vendor"
readme="$vendor_dir/README.md"
package="socket.io-client"

pinned_version() {
    # The README names the version on a line of the form "Version: X.Y.Z".
    sed -n 's/^Version: \([0-9][0-9.]*[0-9A-Za-z.-]*\)$/\1/p' "$readme" 2>/dev/null | head -n 1
}

version="${1:-$(pinned_version)}"
if [[ -z "$version" ]]; then
    echo "usage: $0 VERSION (no version pinned in assets/vendor/README.md yet)" >&2
    exit 2
fi
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "error: VERSION must be an exact release like 4.8.1, got '$version'" >&2
    exit 2
fi

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

echo "fetching $package@$version"
(cd "$work_dir" && npm pack --silent "$package@$version" >/dev/null)
tar -xzf "$work_dir/$package-$version.tgz" -C "$work_dir"

source_js="$work_dir/package/dist/socket.io.min.js"
source_license="$work_dir/package/LICENSE"
for file in "$source_js" "$source_license"; do
    if [[ ! -f "$file" ]]; then
        echo "error: $package@$version has no ${file#"$work_dir"/package/}" >&2
        exit 1
    fi
done

mkdir -p "$vendor_dir"
cp "$source_js" "$vendor_dir/socket.io.min.js"
cp "$source_license" "$vendor_dir/socket.io-client.LICENSE"
(cd "$vendor_dir" && sha256sum socket.io.min.js socket.io-client.LICENSE > SHA256SUMS)

cat > "$readme" <<README
# Vendored third-party files

The served page loads these from \`/assets/vendor/\`; nothing is fetched from a CDN.

| file | origin |
|---|---|
| \`socket.io.min.js\` | \`dist/socket.io.min.js\` of the npm package \`$package\`, unmodified |
| \`socket.io-client.LICENSE\` | that package's \`LICENSE\` (MIT) |
| \`SHA256SUMS\` | sha256 of both files, checked by \`scripts/check-vendor.sh\` |

Package: $package
Version: $version

To update, run \`scripts/vendor-socketio.sh NEW_VERSION\` (it rewrites all of the above),
then \`scripts/check-vendor.sh\`, and test the page. The client must stay on the 4.x line,
which speaks the Socket.IO v5 / Engine.IO v4 protocol the server implements.
README

echo "vendored $package@$version:"
cat "$vendor_dir/SHA256SUMS"
