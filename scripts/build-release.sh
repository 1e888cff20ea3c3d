#!/usr/bin/env bash
# Release build of every binary, with the vpc-cni plugin linked statically
# against musl: kubelet execs it for every pod, so its start is on every
# ADD and DEL. Measured here (bench/RESULTS.md): a static musl binary starts
# in ≈ 0.65 ms, a static glibc one in ≈ 0.86 ms (glibc's static start-up
# resolves its ifuncs and sets up more), a dynamic one in ≈ 1.2 ms. Without
# the musl target (scripts/setup.sh adds it with rustup) the plugin falls
# back to static glibc, as before.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked "$@"
target_dir=${CARGO_TARGET_DIR:-target}
musl="$(uname -m)-unknown-linux-musl"
if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
    cargo build --release --locked -p cni-plugin --bin vpc-cni --target "$musl" "$@"
    # Replaced, not overwritten: target/release/vpc-cni is a hard link to
    # cargo's own copy of the glibc build.
    rm -f "$target_dir/release/vpc-cni"
    cp "$target_dir/$musl/release/vpc-cni" "$target_dir/release/vpc-cni"
else
    echo "build-release: the $musl target is not installed (scripts/setup.sh adds it);" \
        "linking the plugin statically against glibc instead, which starts slower" >&2
    # The flag goes to the plugin's final link only (`cargo rustc`): a global
    # +crt-static also hits proc-macro crates, which cannot be static.
    cargo rustc --release --locked -p cni-plugin --bin vpc-cni "$@" -- -C target-feature=+crt-static
fi
