#!/usr/bin/env bash
# promtool (checks manifests/monitoring/prometheus-rules.yaml, runs its rule unit tests
# and lints a live /metrics scrape). Debian ships it only inside the
# `prometheus` server package, whose install would start a server: the
# package is downloaded and only promtool is extracted from it.
# Idempotent; run as root (from scripts/setup.sh).
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
echo "setup: installing promtool (from Debian's prometheus package, server not installed)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
chmod 0777 "$work" # apt's sandbox user must be able to write the download
if ! apt-get download prometheus >/dev/null 2>&1; then
    apt-get update -qq
    apt-get download prometheus >/dev/null
fi
dpkg-deb -x prometheus_*.deb root
install -m 0755 root/usr/bin/promtool /usr/local/bin/promtool
promtool --version | head -1
