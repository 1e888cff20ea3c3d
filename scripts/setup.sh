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

# --- EC2 end-to-end tests (issue 5) -----------------------------------------
# nftables: ipamd programs SNAT with `nft` at start-up (NetworkPolicy goes
# over netlink; the policy tests and the demo read its table back with
# `nft list table inet vpc_cni`). moto[server]: the
# real EC2 API on 127.0.0.1 that tests/tests/ec2_moto_privileged.rs runs
# ipamd's `ec2` provider against.
if ! command -v nft >/dev/null 2>&1; then
    echo "setup: installing nftables"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nftables >/dev/null
fi
if ! command -v moto_server >/dev/null 2>&1; then
    echo "setup: installing moto[server]"
    if ! command -v pip3 >/dev/null 2>&1 && ! command -v pip >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    pip_cmd=$(command -v pip3 || command -v pip)
    "$pip_cmd" install -q "moto[server]" 2>/dev/null ||
        "$pip_cmd" install -q --break-system-packages "moto[server]"
fi
# -----------------------------------------------------------------------------

# --- manifests/ and charts/ checks (tests/tests/manifests.rs) ---------------
# Offline tools in a virtualenv of their own: kubernetes-validate bundles the
# Kubernetes OpenAPI schemas (no download at run time), helm-python-sdk binds
# Helm's own Go engine to render the chart (Helm is not packaged in Debian).
k8s_venv=${VPC_CNI_TEST_VENV:-/opt/vpc-cni-test/venv}
k8s_tools=(kubernetes-validate==1.37.0 helm-python-sdk==0.2.2)
if ! "$k8s_venv/bin/python" -c 'import kubernetes_validate, helm_python' 2>/dev/null; then
    if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed"; then
        echo "setup: installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "setup: installing ${k8s_tools[*]} into $k8s_venv"
    rm -rf "$k8s_venv"
    /usr/bin/python3 -m venv "$k8s_venv"
    "$k8s_venv/bin/pip" install --quiet --disable-pip-version-check "${k8s_tools[@]}"
fi
# --- end of manifests/ and charts/ checks -----------------------------------

# The release plugin is a static musl binary (scripts/build-release.sh):
# faster to start than glibc's static build. Without network access this
# may fail; the release build then falls back to glibc.
musl_target="$(uname -m)-unknown-linux-musl"
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed 2>/dev/null | grep -qx "$musl_target"; then
    echo "setup: adding the $musl_target target (static plugin)"
    rustup target add "$musl_target" >/dev/null 2>&1 ||
        echo "setup: could not add $musl_target; release builds link the plugin against glibc" >&2
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest >/dev/null
fi

# Real container runtimes (containerd, podman) and their offline images, for
# the runtime end-to-end tests; also protoc, which their CRI client's build needs.
"$(dirname "$0")/setup-runtimes.sh"

# promtool for the Prometheus rule checks (i8 metrics).
"$(dirname "$0")/setup-promtool.sh"
