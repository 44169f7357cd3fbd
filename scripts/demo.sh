#!/usr/bin/env bash
# The README's first command. Until the AF_XDP data path lands it builds xtcp and runs the simulated demo: one
# connection's handshake, data and teardown between two xtcp stacks, printed like tcpdump, with a pcap file.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# shellcheck disable=SC2086 # the package lists are words
ensure_packages $BUILD_PACKAGES $RUN_PACKAGES
ensure_rust

cargo build --release --locked
pcap=$(mktemp /tmp/xtcp-demo.XXXXXX.pcap)
trap 'rm -f "$pcap"' EXIT
./target/release/xtcp demo --sim --pcap "$pcap" "$@"
echo
echo "== the same frames, as tcpdump reads the pcap"
tcpdump -nr "$pcap" 2>/dev/null
