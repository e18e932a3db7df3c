#!/usr/bin/env bash
# conda-store's web UI, pinned: the built files (dist/main.js, dist/main.css and their licences)
# of the npm package @conda-store/conda-store-ui, fetched with npm and checked against the
# integrity recorded here. The API serves them from ENVSTORE_UI_DIRECTORY (default: the folder
# below). Nothing of npm's is kept: no node_modules, no package.json. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2024.11.1
INTEGRITY=sha512-E78O3ezyrzAyMPkydTvZJdpKj63kKtCKF6bSZ1R+x8olre8vTo/4LyZdlf6VAPebeNYqGos5ENcEJF6JYr9aRA==
TARGET=${1:-services/api/static/conda-store-ui}

if [ "$(cat "$TARGET/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "fetch-ui: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --loglevel=error "@conda-store/conda-store-ui@$VERSION" >/dev/null)
tarball=$(ls "$work"/*.tgz)
# npm's "integrity" form: sha512- and the base64 of the digest (python3: always there, unlike openssl).
actual=sha512-$(python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tarball")
if [ "$actual" != "$INTEGRITY" ]; then
    echo "fetch-ui: $tarball has integrity $actual, expected $INTEGRITY" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$work" \
    package/LICENSE package/dist/main.js package/dist/main.css package/dist/main.js.LICENSE.txt

staged="$TARGET.partial"
rm -rf "$staged"
mkdir -p "$staged"
cp "$work"/package/dist/main.js "$work"/package/dist/main.css "$work"/package/dist/main.js.LICENSE.txt "$staged"/
cp "$work"/package/LICENSE "$staged"/LICENSE
# Served as is to browsers that accept gzip (1.7 MB of JavaScript becomes about 0.5 MB).
gzip -9 --keep "$staged"/main.js "$staged"/main.css
echo "$VERSION" >"$staged/VERSION"
rm -rf "$TARGET"
mv "$staged" "$TARGET"
echo "conda-store-ui $VERSION in $TARGET"
