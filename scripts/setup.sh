#!/usr/bin/env bash
# Installs what the demo, the tests and the benches need on Debian 12, as root.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup: run as root: the demo and the privileged tests create network namespaces" >&2
    exit 1
fi

# libc6-dev: the static glibc the release build links the plugin against.
packages=(iproute2 iputils-ping util-linux containernetworking-plugins libc6-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi


# NetworkPolicy (issue 7): the policy tests and the demo read the daemon's
# table back with `nft list table inet vpc_cni`; ipamd itself never runs nft.
if ! command -v nft >/dev/null 2>&1; then
    echo "setup: installing nftables"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nftables >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi
