#!/usr/bin/env bash
# Build the toxiproxy fault proxy (its server only) from its Go module, once per pin.
#
#   hack/toxiproxy/build.sh          build unless the cache already holds this pin
#   hack/toxiproxy/build.sh path     print the binary's path; exit 1 when it is not built
#
# The fault tests (tests/reliability, make chaos) put a real TCP proxy between
# workers and PostgreSQL to cut and stall connections. Like the control plane
# (hack/controlplane/build.sh) it is built with the machine's Go from the Go
# module proxy only (GOTOOLCHAIN=local: no toolchain download). The pin is
# module/go.mod + go.sum; the binary lands in
# $JOBSTEAD_CACHE_DIR/toxiproxy/<key>/toxiproxy-server, <key> hashing the pin
# and this script.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${JOBSTEAD_CACHE_DIR:-$repo/.cache}
key=$( (cd "$here" && cat module/go.mod module/go.sum build.sh) | sha256sum | cut -c1-16)
target=$cache/toxiproxy/$key
binary=$target/toxiproxy-server

case "${1:-build}" in
  path)
    if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
    echo "toxiproxy not built for pin $key: run \`make toxiproxy\`" >&2
    exit 1 ;;
  build) ;;
  *) sed -n '2,5p' "$0" >&2; exit 2 ;;
esac

mkdir -p "$cache/toxiproxy"
exec 9>"$cache/toxiproxy/.lock"  # a second build on a shared cache waits for the first
flock 9
if [ -x "$binary" ]; then
  echo "toxiproxy $key is up to date in $binary"
  exit 0
fi

command -v go >/dev/null || { echo "building toxiproxy needs Go (apt-get install golang)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0
version=$(cd "$here/module" && go list -m -f '{{.Version}}' github.com/Shopify/toxiproxy/v2)
echo "building toxiproxy-server $version"
rm -rf "$target"
mkdir -p "$target"
(cd "$here/module" && go build -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=$version" \
  -o "$binary.partial" github.com/Shopify/toxiproxy/v2/cmd/server)
mv "$binary.partial" "$binary"
for old in "$cache"/toxiproxy/*/; do
  [ "${old%/}" = "$target" ] || rm -rf "$old"
done
echo "toxiproxy $version built: $binary"
