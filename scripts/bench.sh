#!/usr/bin/env bash
# The benchmarks. Each tool measures vpc-cni against its reference in the
# same run and writes its own section of bench/RESULTS.md, headed by the
# commit, the date, the machine and its load. Run as root on Debian 12; like
# the tests, it works only in network namespaces it creates and removes.
#
#   scripts/bench.sh           # everything: regenerates every section of bench/RESULTS.md
#   scripts/bench.sh --quick   # ADD/DEL/churn/burst ratios against ptp and the policy
#                              # overhead in under two minutes; RESULTS.md is left alone
#   scripts/bench.sh --pods 700 ...   # one pod-churn run with these options
#                                     # (see target/release/pod-churn --help)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-release.sh

if [[ ${1:-} == --quick ]]; then
    ./target/release/pod-churn "$@"
    ./target/release/policy-bench --quick
    exit
fi
if (($#)); then
    exec ./target/release/pod-churn "$@"
fi

# The headline, then the durability comparison (its section compares the
# two runs), then NetworkPolicy's cost on ADD.
./target/release/pod-churn
./target/release/pod-churn --durability sync
./target/release/pod-churn --durability async
./target/release/policy-bench
# The allocator against its Mutex baselines (criterion), then its section.
cargo bench -p vpc-cni-bench --bench alloc --locked
./target/release/alloc-report
# Warm pools of 1000 and 10 000 nodes against one EC2 account, virtual time.
./target/release/scale-sim
