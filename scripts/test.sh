#!/usr/bin/env bash
# Everything CI checks: installs what is missing, then rustfmt, clippy -D warnings, and every test — the ones
# that need root and veth included (they are #[ignore]d for plain `cargo test`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# shellcheck disable=SC2086 # the package lists are words
ensure_packages $BUILD_PACKAGES $RUN_PACKAGES
ensure_rust

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
# The build without clang and AF_XDP that plain `cargo test --no-default-features` makes.
cargo clippy --all-targets --locked --no-default-features -- -D warnings
echo "== build"
cargo build --profile ci --locked --all-targets
echo "== tests (root and veth ones included)"
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the veth and pcap tests need root — run scripts/test.sh as root" >&2
    exit 1
fi
# The `ci` profile is optimized like release, with xtcp's debug assertions and overflow checks kept (Cargo.toml).
XTCP_SIM_SEEDS=20000 cargo test --profile ci --locked -- --include-ignored
echo "== fuzz: 30 s per target (scripts/fuzz.sh)"
scripts/fuzz.sh 30
echo "== bench smoke runs"
# Each criterion bench once, in its test mode (no measurement), built like the tests.
cargo test --profile ci --locked --benches >/dev/null
echo "== end-to-end bench, quick: xtcp/kernel ratios above their floors"
BENCH_BIN=$PWD/target/ci/xtcp scripts/bench.sh --quick
echo "all checks passed"
