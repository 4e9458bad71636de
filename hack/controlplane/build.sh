#!/usr/bin/env bash
# Build the local Kubernetes control plane from Go modules, once per pin set.
#
#   hack/controlplane/build.sh          build unless the cache already holds this pin set
#   hack/controlplane/build.sh bindir   print the binary folder; exit 1 when it is not built
#   hack/controlplane/build.sh key      print the cache key
#
# No Docker engine runs on our machines, so kind is out; instead we build what
# envtest downloads (etcd, kube-apiserver) plus kube-controller-manager,
# kube-scheduler, kubectl and helm with the machine's Go, from the Go module
# proxy only (GOTOOLCHAIN=local: no toolchain downloads either).
#
# The pins are the go.mod/go.sum files of the wrapper modules next to this
# script (written by pin.sh). Binaries land in
# $JOBSTEAD_CACHE_DIR/controlplane/<key>/bin, where <key> hashes those files and
# this script, so changing a pin or a build flag rebuilds and nothing else does.
# $JOBSTEAD_CACHE_DIR/bin points at the current set.
#
# Build flags follow the upstream release builds (hack/lib/golang.sh in
# Kubernetes, the Makefiles of etcd and helm): static, -trimpath, stripped, and
# the version variables set so /version and `kubectl version` tell the truth.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${JOBSTEAD_CACHE_DIR:-$repo/.cache}
modules=(kubernetes etcd helm)

cache_key() {
  (
    cd "$here"
    for m in "${modules[@]}"; do cat "$m/go.mod" "$m/go.sum"; done
    cat build.sh
  ) | sha256sum | cut -c1-16
}

key=$(cache_key)
target=$cache/controlplane/$key
bindir=$target/bin

case "${1:-build}" in
  key) echo "$key"; exit 0 ;;
  bindir)
    if [ -f "$target/complete" ]; then echo "$bindir"; exit 0; fi
    echo "control plane not built for pins $key: run \`make controlplane\`" >&2
    exit 1 ;;
  build) ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac

mkdir -p "$cache/controlplane"
# Engineers share one working tree: the second `make test` waits for the first
# build instead of compiling Kubernetes again beside it.
exec 9>"$cache/controlplane/.lock"
flock 9

if [ -f "$target/complete" ]; then
  ln -sfn "controlplane/$key/bin" "$cache/bin"
  echo "control plane $key is up to date in $bindir"
  exit 0
fi

# GOFLAGS is ours alone, so the binaries do not depend on the caller's setup;
# -buildvcs=false keeps our own git state (a dirty tree) out of them.
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0
# One go build per module: packages shared by the four Kubernetes binaries are
# compiled once. -p stays at Go's default (the number of CPUs).
gobuild() { # module-dir output ldflags tags package...
  local dir=$1 out=$2 ldflags=$3 tags=$4
  shift 4
  (cd "$here/$dir" && go build -tags "$tags" -ldflags "$ldflags" -o "$out" "$@")
}
modversion() { # module-dir module-path
  (cd "$here/$1" && go list -m -f '{{.Version}}' "$2")
}
modtime() { # module-dir module-path
  (cd "$here/$1" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$2")
}

rm -rf "$target"
stage=$target/bin.partial
mkdir -p "$stage"
start=$SECONDS

k8s=$(modversion kubernetes k8s.io/kubernetes)
k8s_minor=${k8s#v1.}
k8s_minor=${k8s_minor%%.*}
kflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  # gitCommit stays unset, as upstream does when it does not know the commit:
  # the module proxy serves the source archive, not the git history.
  kflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  kflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$(modtime kubernetes k8s.io/kubernetes)"
done
echo "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $k8s"
gobuild kubernetes "$stage/" "$kflags" selinux,notest,grpcnotrace \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl

etcd=$(modversion etcd go.etcd.io/etcd/server/v3)
echo "building etcd $etcd"
gobuild etcd "$stage/etcd" "-s -w" "" go.etcd.io/etcd/server/v3

helm=$(modversion helm helm.sh/helm/v3)
# Like helm's Makefile: the Kubernetes version helm assumes without a cluster
# (helm template, helm lint) is the one its client-go was released with.
helm_k8s_minor=$(modversion helm k8s.io/client-go)
helm_k8s_minor=${helm_k8s_minor#v0.}
helm_k8s_minor=${helm_k8s_minor%%.*}
hflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm -X helm.sh/helm/v3/internal/version.gitTreeState=archive"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  hflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done
echo "building helm $helm"
gobuild helm "$stage/helm" "$hflags" "" helm.sh/helm/v3/cmd/helm

mv "$stage" "$bindir"
printf 'kubernetes=%s\netcd=%s\nhelm=%s\n' "$k8s" "$etcd" "$helm" >"$target/versions"
touch "$target/complete"
ln -sfn "controlplane/$key/bin" "$cache/bin"
# Older pin sets are dead weight (several hundred MB each).
for old in "$cache"/controlplane/*/; do
  [ "${old%/}" = "$target" ] || rm -rf "$old"
done
echo "control plane $key built in $((SECONDS - start)) s: $(ls "$bindir" | tr '\n' ' ')"
