#!/usr/bin/env bash
# Everything CI checks: installs what is missing, then rustfmt, clippy -D warnings, and every test — the ones
# that need root and veth included (they are #[ignore]d for plain `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# AF_XDP: clang, llvm and libbpf-dev build the XDP program; make, m4, gcc, libelf-dev, zlib1g-dev and pkg-config
# build the vendored libbpf and libxdp; ethtool, iputils-ping and python3 drive the veth tests.
ensure_packages tcpdump iproute2 ca-certificates \
    clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make m4 gcc libc6-dev \
    ethtool iputils-ping python3
ensure_rust

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== build"
cargo build --release --locked --all-targets
echo "== tests (root and veth ones included)"
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the veth and pcap tests need root — run scripts/test.sh as root" >&2
    exit 1
fi
cargo test --release --locked -- --include-ignored
echo "== timer bench smoke run"
cargo bench --locked --bench timer -- --test >/dev/null
echo "all checks passed"
