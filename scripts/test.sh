#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and the end-to-end
# tests that run the real plugin against a real ipamd in network namespaces
# they create and remove. Run as root on Debian 12 with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests exec target/debug/{vpc-cni,ipamd}. `--tests` gives
# this build the same feature set as nextest's (dev-dependencies switch on
# features of hyper, tower, serde...), so the AWS SDK under ipamd is
# compiled once here and reused, not a second time for the tests.
cargo build --workspace --bins --tests --locked
cargo nextest run --workspace --locked --run-ignored all --no-fail-fast

# Every test removes what it made; prove it.
leftover=$(ip netns list | grep -E '^vpccni-' || true)
if [[ -n $leftover ]]; then
    echo "test: network namespaces left behind:" >&2
    echo "$leftover" >&2
    exit 1
fi
