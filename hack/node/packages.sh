#!/usr/bin/env bash
# Install the Debian packages the local node needs, when some are missing.
#
#   hack/node/packages.sh
#
# containerd and runc run the containers, containernetworking-plugins wires
# their network, iptables carries the `kubernetes` Service to the API server,
# debootstrap and buildah build the images, gcc and libc6-dev compile pause.
# Debian's own packages only: nothing is downloaded from elsewhere.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables buildah debootstrap gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
echo "installing ${missing[*]} from Debian packages"
# Another apt run (a second make, unattended upgrades) holds the lock: wait for it.
apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
"${sudo[@]}" "${apt[@]}" update
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
