#!/usr/bin/env bash
# Build the local node's kubelet and pause binaries, once per pin set.
#
#   hack/node/build.sh          build unless the cache already holds this pin set
#   hack/node/build.sh bindir   print the binary folder; exit 1 when it is not built
#   hack/node/build.sh key      print the cache key
#
# The kubelet comes from the same Kubernetes release as the control plane
# (hack/controlplane/pin.sh writes both wrapper modules; this script refuses a
# kubelet module whose k8s.io/kubernetes differs from the control plane's). It
# has a module of its own so that adding it leaves the control plane's pins,
# and so its cache key, untouched.
#
# pause is the sandbox process of every Pod: Kubernetes' own build/pause/linux/
# pause.c from the same release's module, compiled static with the flags of its
# Makefile (the upstream image does nothing more). hack/node/images.sh puts it
# into an image.
#
# No kube-proxy: see hack/node/README.md for how Pods reach the API server.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${JOBSTEAD_CACHE_DIR:-$repo/.cache}

cache_key() {
  (
    cd "$here"
    cat kubelet/go.mod kubelet/go.sum build.sh
  ) | sha256sum | cut -c1-16
}

key=$(cache_key)
target=$cache/node/$key
bindir=$target/bin

case "${1:-build}" in
  key) echo "$key"; exit 0 ;;
  bindir)
    if [ -f "$target/complete" ]; then echo "$bindir"; exit 0; fi
    echo "node binaries not built for pins $key: run \`make node\`" >&2
    exit 1 ;;
  build) ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac

mkdir -p "$cache/node"
exec 9>"$cache/node/.lock"
flock 9

if [ -f "$target/complete" ]; then
  echo "node binaries $key are up to date in $bindir"
  exit 0
fi

export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0
modversion() { # module-dir module-path
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}
k8s=$(modversion "$here/kubelet" k8s.io/kubernetes)
planes=$(modversion "$here/../controlplane/kubernetes" k8s.io/kubernetes)
if [ "$k8s" != "$planes" ]; then
  echo "kubelet pinned to $k8s but the control plane to $planes: re-run hack/controlplane/pin.sh" >&2
  exit 1
fi

rm -rf "$target"
stage=$target/bin.partial
mkdir -p "$stage"
start=$SECONDS

k8s_minor=${k8s#v1.}
k8s_minor=${k8s_minor%%.*}
build_date=$(cd "$here/kubelet" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
kflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  kflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
echo "building kubelet $k8s"
# The control plane's tags, so the packages both share come from Go's build cache.
(cd "$here/kubelet" && go build -tags selinux,notest,grpcnotrace -ldflags "$kflags" -o "$stage/kubelet" \
  k8s.io/kubernetes/cmd/kubelet)

source=$(cd "$here/kubelet" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
pause_version=$(sed -n 's/^TAG ?= //p' "$source/build/pause/Makefile")
echo "building pause $pause_version"
# CFLAGS of build/pause/Makefile; REV is the release the source came from.
gcc -Os -Wall -Werror -static "-DVERSION=v$pause_version-$k8s" -o "$stage/pause" "$source/build/pause/linux/pause.c"

mv "$stage" "$bindir"
printf 'kubernetes=%s\npause=%s\n' "$k8s" "$pause_version" >"$target/versions"
touch "$target/complete"
for old in "$cache"/node/*/; do
  [ "${old%/}" = "$target" ] || [ "$(basename "$old")" = images ] || rm -rf "$old"
done
echo "node binaries $key built in $((SECONDS - start)) s: $(ls "$bindir" | tr '\n' ' ')"
