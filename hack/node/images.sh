#!/usr/bin/env bash
# Build the local node's images without a registry, once per set of inputs.
#
#   hack/node/images.sh                 build whatever is missing
#   hack/node/images.sh build NAME...   build only these (and what they are built FROM)
#   hack/node/images.sh archives        print name=archive lines; exit 1 when one is not built
#
# Four images, each written as a docker-archive under $JOBSTEAD_CACHE_DIR/images
# for the node to import into its containerd (tests/support/node.py):
#
#   base      Debian bookworm (debootstrap, minbase) with Debian's python3 and
#             python3-venv: the Dockerfile's BASE here, where python:3.x-slim
#             cannot be pulled. Keyed on this script.
#   pause     the Pod sandbox: hack/node/build.sh's static pause, nothing else,
#             as Kubernetes' build/pause/Dockerfile does. Keyed on that binary.
#   jobstead  the repository's Dockerfile built FROM base. Keyed on the base and
#             the files the Dockerfile copies.
#   testapp   tests/e2e/app.Dockerfile FROM jobstead: the test apps (tests/apps)
#             for the e2e tests' worker Pods.
#
# buildah runs with its own storage under the cache and the vfs driver: vfs
# mounts nothing, so no mount outlives a build. RUN steps use chroot isolation
# and the host's network (pip fetches the dependencies).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${JOBSTEAD_CACHE_DIR:-$repo/.cache}
images=$cache/images
suite=bookworm
mirror=${JOBSTEAD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# useradd (passwd) is what the Dockerfile needs beyond Python.
packages=python3,python3-venv,passwd,ca-certificates

# A key hashes an image's inputs, the function that builds it among them, so
# editing this script rebuilds only the images whose recipe changed.
hash16() { sha256sum | cut -c1-16; }
recipe() { declare -f "build_$1" save image_ref; }
base_key() { { recipe base; echo "$suite $packages"; } | hash16; }
pause_key() { { recipe pause; sha256sum "$("$here/build.sh" bindir)/pause"; } | hash16; }
jobstead_key() {
  {
    recipe jobstead
    base_key
    cd "$repo"
    # The Dockerfile and what it copies; .dockerignore's exclusions left out.
    find Dockerfile .dockerignore pyproject.toml README.md runtime operator -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | hash16
}

testapp_key() {
  {
    recipe testapp
    jobstead_key
    cd "$repo"
    find tests/e2e/app.Dockerfile tests/__init__.py tests/apps -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | hash16
}

archive() { # name key
  echo "$images/$1-$2.tar"
}

buildah() {
  command buildah --root "$images/storage" --runroot "$images/run" --storage-driver vfs "$@"
}

# Images are named after their key, so an archive's name tells what is inside.
save() { # name key image
  local path
  path=$(archive "$1" "$2")
  buildah push --quiet "$3" "docker-archive:$path.partial:$3" >/dev/null
  mv "$path.partial" "$path"
  for old in "$images/$1"-*.tar; do
    [ "$old" = "$path" ] || rm -f "$old"
  done
}

image_ref() { # name key
  echo "localhost/jobstead/$1:$2"
}

build_base() {
  local key=$1 rootfs=$images/base-rootfs
  echo "building base image $key: debootstrap $suite ($packages)"
  rm -rf "$rootfs"
  # debootstrap mounts /proc and /sys inside the root while it works; an
  # interrupted run must not leave them mounted.
  trap 'for m in proc sys dev/pts; do umount -l "'"$rootfs"'/$m" 2>/dev/null || true; done' EXIT
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$images/debootstrap.log" 2>&1 \
    || { tail -20 "$images/debootstrap.log" >&2; exit 1; }
  trap - EXIT
  # What an image does not need: apt's downloads and indexes, docs, locales.
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
  local ctr ref
  ref=$(image_ref base "$key")
  ctr=$(buildah from scratch)
  tar -C "$rootfs" -cf "$rootfs.tar" .
  buildah add --quiet "$ctr" "$rootfs.tar" / >/dev/null
  rm -f "$rootfs.tar"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["python3"]' --created-by "debootstrap --variant=minbase --include=$packages $suite" "$ctr"
  buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
  rm -rf "$rootfs"
  save base "$key" "$ref"
}

build_pause() {
  local key=$1 ctr ref
  ref=$(image_ref pause "$key")
  echo "building pause image $key"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$("$here/build.sh" bindir)/pause" /pause >/dev/null
  buildah config --user 65535:65535 --entrypoint '["/pause"]' "$ctr"
  buildah commit --quiet --rm "$ctr" "$ref" >/dev/null
  save pause "$key" "$ref"
}

build_jobstead() {
  local key=$1 ref
  ref=$(image_ref jobstead "$key")
  echo "building jobstead image $key from the Dockerfile"
  # The base archive outlives buildah's storage (a cleaned cache, another machine's).
  buildah inspect --type image "$(image_ref base "${keys[base]}")" >/dev/null 2>&1 \
    || buildah pull --quiet "docker-archive:$(archive base "${keys[base]}")" >/dev/null
  # pip in the build trusts what this machine trusts (a TLS-inspecting proxy's
  # CA, say) and uses its index, through a pip.conf mounted for RUN steps only.
  local host_ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  {
    echo "[global]"
    echo "cert = /etc/ssl/certs/build-host-ca.crt"
    if [ -n "${PIP_INDEX_URL:-}" ]; then echo "index-url = $PIP_INDEX_URL"; fi
  } >"$images/pip.conf"
  buildah bud --quiet --isolation chroot --network host --layers=false \
    --volume "$images/pip.conf:/etc/pip.conf:ro" --volume "$host_ca:/etc/ssl/certs/build-host-ca.crt:ro" \
    --build-arg "BASE=$(image_ref base "${keys[base]}")" -t "$ref" -f "$repo/Dockerfile" "$repo" >/dev/null
  save jobstead "$key" "$ref"
}

build_testapp() {
  local key=$1 ref
  ref=$(image_ref testapp "$key")
  echo "building testapp image $key"
  buildah inspect --type image "$(image_ref jobstead "${keys[jobstead]}")" >/dev/null 2>&1 \
    || buildah pull --quiet "docker-archive:$(archive jobstead "${keys[jobstead]}")" >/dev/null
  buildah bud --quiet --isolation chroot --layers=false \
    --build-arg "BASE=$(image_ref jobstead "${keys[jobstead]}")" -t "$ref" -f "$repo/tests/e2e/app.Dockerfile" "$repo" >/dev/null
  save testapp "$key" "$ref"
}

names=(base pause jobstead testapp)
if [ "${1:-build}" = archives ]; then
  status=0
  for name in "${names[@]}"; do
    if ! key=$("${name}_key" 2>/dev/null); then status=1; continue; fi
    path=$(archive "$name" "$key")
    if [ -f "$path" ]; then echo "$name=$path"; else status=1; fi
  done
  [ $status -eq 0 ] || echo "node images not built for these inputs: run \`make node\`" >&2
  exit $status
fi
[ "${1:-build}" = build ] || { sed -n '2,5p' "$0" >&2; exit 2; }
shift || true
# What is asked for, in build order. Without pause, the kubelet's build need not
# be done yet: `make node` builds base, jobstead and testapp (network and disk
# bound) while Go compiles the kubelet.
wanted=("${names[@]}")
if [ $# -gt 0 ]; then
  wanted=()
  for name in "${names[@]}"; do
    for asked in "$@"; do [ "$asked" = "$name" ] && wanted+=("$name"); done
  done
  [ ${#wanted[@]} -eq $# ] || { echo "images.sh: unknown image among: $* (known: ${names[*]})" >&2; exit 2; }
fi
# Each image needs the keys of the images it is built FROM.
declare -A needs=([base]="" [pause]="" [jobstead]="base" [testapp]="base jobstead")
if [[ " ${wanted[*]} " == *" pause "* ]]; then "$here/build.sh" bindir >/dev/null; fi

mkdir -p "$images"
exec 9>"$images/.lock"
flock 9

# Keys are taken once: a file edited during the build must not mix two versions.
declare -A keys
for name in "${wanted[@]}"; do
  for dependency in ${needs[$name]} "$name"; do
    [ -n "${keys[$dependency]:-}" ] || keys[$dependency]=$("${dependency}_key")
  done
done
for name in "${wanted[@]}"; do
  key=${keys[$name]}
  if [ -f "$(archive "$name" "$key")" ]; then
    echo "$name image $key is up to date"
    continue
  fi
  start=$SECONDS
  "build_$name" "$key"
  echo "$name image $key built in $((SECONDS - start)) s"
done
# Only the current images stay in buildah's storage (known once all four are).
[ ${#wanted[@]} -eq ${#names[@]} ] || exit 0
buildah images --format '{{.Name}}:{{.Tag}}' | while read -r ref; do
  case "$ref" in
    "$(image_ref base "${keys[base]}")" | "$(image_ref pause "${keys[pause]}")" | \
      "$(image_ref jobstead "${keys[jobstead]}")" | "$(image_ref testapp "${keys[testapp]}")") ;;
    *) buildah rmi "$ref" >/dev/null 2>&1 || true ;;
  esac
done
buildah rmi --prune >/dev/null 2>&1 || true
