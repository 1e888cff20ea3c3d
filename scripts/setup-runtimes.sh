#!/usr/bin/env bash
# Installs the real container runtimes the end-to-end runtime tests drive
# (tests/tests/{containerd_cri,podman}_privileged.rs) and builds, offline,
# the two images they use. Debian 12, as root. Idempotent and quick when
# everything is already there; called by scripts/setup.sh.
#
# Images (no registry is reachable when the tests run):
#   busybox.tar  localhost/vpccni-busybox:1, busybox-static with its applets
#   pause.tar    localhost/podman-pause:4.3.1-0, the sandbox image podman
#                builds around catatonit (containerd's `sandbox_image`)
# both `podman save` docker-archives under $VPC_CNI_E2E_IMAGES
# (default /var/lib/vpc-cni-e2e/images). Each test imports them into a
# store of its own, so the machine's podman and containerd state is never
# touched; the images are built in a throwaway store here for the same
# reason.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-runtimes: run as root" >&2
    exit 1
fi

images=${VPC_CNI_E2E_IMAGES:-/var/lib/vpc-cni-e2e/images}
busybox_ref=localhost/vpccni-busybox:1
pause_ref=localhost/podman-pause:4.3.1-0

# protobuf-compiler: the CRI client's types are generated at build time.
# catatonit: what podman's pause image is built from.
packages=(containerd runc podman conmon catatonit busybox-static protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup-runtimes: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ -s $images/busybox.tar && -s $images/pause.tar ]]; then
    exit 0
fi

echo "setup-runtimes: building the offline images in $images"
mkdir -p "$images"
work=$(mktemp -d /tmp/vpccni-setup-images.XXXXXX)
cleanup() {
    # podman may leave its storage's own mounts (overlay, a pod's shm).
    local m
    for m in $(awk -v w="$work" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$work"
    find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -name vpccni-setup-images -type d \
        -exec rmdir {} + 2>/dev/null || true
}
trap cleanup EXIT

# The same settings the podman test uses: this machine's root lacks
# CAP_SYS_RESOURCE (so explicit ulimits), crun rejects its hybrid cgroups.
cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:8192"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
[network]
network_backend = "cni"
network_config_dir = "$work/net.d"
EOF
mkdir -p "$work/net.d"
podman=(env CONTAINERS_CONF="$work/containers.conf" podman
    --root "$work/root" --runroot "$work/runroot" --tmpdir "$work/tmp" --storage-driver vfs)

# busybox-static and a link per applet, plus the files a container expects.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
tar -C "$rootfs" -cf "$work/rootfs.tar" .
"${podman[@]}" import --quiet --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$busybox_ref" >/dev/null
"${podman[@]}" save --quiet --format docker-archive -o "$work/busybox.tar" "$busybox_ref"

# `podman pod create` builds the pause image locally from catatonit.
# A cgroup parent of our own, removed below (podman's default, libpod_parent,
# would stay behind).
"${podman[@]}" pod create --name vpccni-setup --network none \
    --cgroup-parent /vpccni-setup-images >/dev/null
"${podman[@]}" pod rm --force vpccni-setup >/dev/null
"${podman[@]}" save --quiet --format docker-archive -o "$work/pause.tar" "$pause_ref"

mv "$work/busybox.tar" "$images/busybox.tar"
mv "$work/pause.tar" "$images/pause.tar"
echo "setup-runtimes: images ready in $images"
