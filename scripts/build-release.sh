#!/usr/bin/env bash
# Release build of every binary, with the vpc-cni plugin linked statically:
# kubelet execs it for every pod, and without the dynamic loader it starts
# in ~0.6 ms instead of ~0.9 ms here. The flag goes to the plugin's final
# link only (`cargo rustc`), because a global +crt-static also hits
# proc-macro crates, which cannot be static.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked "$@"
cargo rustc --release --locked -p cni-plugin --bin vpc-cni "$@" -- -C target-feature=+crt-static
