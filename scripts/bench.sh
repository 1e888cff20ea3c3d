#!/usr/bin/env bash
# The benchmarks: the pod-churn harness (vpc-cni against the reference
# ptp + host-local plugins, same workloads, same run) and, when present, the
# allocator's criterion bench. Results and the machine they ran on go to
# bench/RESULTS.md and bench/results/. Run as root on Debian 12; like the
# tests, it works only in network namespaces it creates and removes.
#
#   scripts/bench.sh                 # full run (500 sequential pods, 400-pod 8-way churn)
#   scripts/bench.sh --quick         # smoke run; results go to bench/results/quick/
#   scripts/bench.sh --pods 700      # see target/release/pod-churn --help
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/build-release.sh
./target/release/pod-churn "$@"
# NetworkPolicy: ADD with enforcement on vs off, change-to-enforcement, RSS.
quick_flag=()
for arg in "$@"; do
    [[ $arg == --quick ]] && quick_flag=(--quick)
done
./target/release/policy-bench "${quick_flag[@]}"

# The allocator against its Mutex baselines (criterion), then its section
# of bench/RESULTS.md. A --quick run only smoke-tests it.
quick=false
for arg in "$@"; do
    [[ $arg == --quick ]] && quick=true
done
if $quick; then
    cargo bench -p vpc-cni-bench --bench alloc --locked -- --quick
else
    cargo bench -p vpc-cni-bench --bench alloc --locked
    ./target/release/alloc-report
fi
