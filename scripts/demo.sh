#!/usr/bin/env bash
# Builds vpc-cni and runs `ipamd demo`: a throwaway node namespace on the
# embedded simulated cloud, real plugin execs for a few pods, connectivity
# checks, then everything removed. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --workspace --bins --locked --quiet
exec ./target/debug/ipamd demo "$@"
