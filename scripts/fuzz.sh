#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ (`wire`: the parsers; `stack`: a whole stack) for SECONDS (default 30),
# one after the other, and stops at the first crash with a non-zero exit. The crashing input is then in
# fuzz/artifacts/TARGET/: replay it with `cargo fuzz run -s none TARGET FILE` (XTCP_FUZZ_TRACE=1 prints each step
# of `stack`), keep it under tests/fuzz_inputs/ with a test in tests/fuzz_regressions.rs, and fix the library.
#
# Usage: scripts/fuzz.sh [SECONDS]
#   XTCP_FUZZ_TARGETS="stack"     the targets to run (default: wire stack)
#   XTCP_FUZZ_SANITIZER=address   build with AddressSanitizer (default: none; see below)
#
# The committed seeds (fuzz/corpus/TARGET/seed-*, recorded from real exchanges by xtcp::fuzz::seeds, and linux-*,
# made from frames of the Linux TCP stack by xtcp::fuzz::linux) are read and never written: what the fuzzer adds
# goes to fuzz/scratch/TARGET, which git ignores and later runs start from.
#
# Stable Rust is enough. cargo-fuzz's default sanitizer, AddressSanitizer, needs `-Zsanitizer=address`, which a
# stable rustc refuses ("the option `Z` is only accepted on the nightly compiler"); `-s none` leaves it out, and
# the coverage instrumentation libFuzzer needs (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`)
# is made of stable flags. xtcp is `#![deny(unsafe_code)]`, and the fuzz build leaves out the AF_XDP feature, the
# one module allowed unsafe code, so ASan would only watch the standard library and the dependencies, at a
# quarter of the speed (wire: 165,000 executions/s without, 41,000 with). What we hunt are panics: cargo fuzz
# builds optimized with debug assertions, so overflows panic too. For an ASan run, XTCP_FUZZ_SANITIZER=address sets
# RUSTC_BOOTSTRAP=1, which lets the stable compiler take -Z flags. (Set it for every cargo fuzz call in a tree:
# cargo caches rustc's answers per set of flags, a refusal included.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "error: SECONDS must be a positive whole number, not '$seconds' — e.g. scripts/fuzz.sh 30" >&2
    exit 2
fi
targets=${XTCP_FUZZ_TARGETS:-wire stack}
sanitizer=${XTCP_FUZZ_SANITIZER:-none}

ensure_rust
# libFuzzer itself is C++, built by libfuzzer-sys.
command -v c++ >/dev/null 2>&1 || ensure_packages g++
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

root=$PWD
cargo fuzz build -s "$sanitizer" --fuzz-dir "$root/fuzz"
for target in $targets; do
    scratch=$root/fuzz/scratch/$target
    log=$root/fuzz/scratch/$target.log
    mkdir -p "$scratch"
    echo "== fuzz $target for ${seconds} s"
    # One process (the machine's cores are shared); inputs up to 8 KiB, each given 20 s before it counts as a hang.
    if ! cargo fuzz run -s "$sanitizer" --fuzz-dir "$root/fuzz" "$target" "$scratch" "$root/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "error: fuzz target $target failed: the input is in fuzz/artifacts/$target/ (full log: $log)" >&2
        exit 1
    fi
    # libFuzzer's closing lines: "#N DONE cov: ... exec/s: ..." and "Done N runs in S second(s)".
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs' "$log" || tail -n 3 "$log"
done
echo "fuzzing found no crash"
