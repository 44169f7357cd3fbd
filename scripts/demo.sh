#!/usr/bin/env bash
# The README's first command: xtcp against the kernel's TCP on the same veth pair, measured in one run.
#
# Installs what is missing, builds, makes two namespaces joined by a veth pair (scripts/netns.sh), and runs the
# same workloads twice: `xtcp http`/`xtcp echo` served and loaded by xtcp over AF_XDP on both ends, then by the
# kernel's TCP on both ends (`--stack kernel`: the same application code over ordinary sockets). Server and load
# generator are pinned to different CPUs, the same for both stacks. Prints one side-by-side table and removes
# everything it made. Needs root.
#
#   scripts/demo.sh                 # about 90 s after the build
#   DEMO_SECS=20 scripts/demo.sh    # longer runs
#   scripts/demo.sh --sim           # no root or veth: watch one connection's life over the simulated link (as
#                                   # another user: built without AF_XDP, in target/sim; tcpdump if it is there)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "${1:-}" = "--sim" ]; then
    shift
    if [ "$(id -u)" -eq 0 ]; then
        # As the other paths do: what the build and the capture's reading need, and the demo's own build.
        # shellcheck disable=SC2086 # the package list is words
        ensure_packages $BUILD_PACKAGES tcpdump
        ensure_rust
        cargo build --release --locked
        bin=./target/release/xtcp
    else
        # No root to install packages: the simulation needs no AF_XDP, so xtcp is built without it (no clang,
        # libbpf or libelf), into a target directory of its own, where it does not replace the demo's build.
        ensure_rust
        cargo build --release --locked --no-default-features --bin xtcp --target-dir target/sim
        bin=./target/sim/release/xtcp
    fi
    pcap=$(mktemp /tmp/xtcp-demo.XXXXXX.pcap)
    trap 'rm -f "$pcap"' EXIT
    "$bin" demo --sim --pcap "$pcap" "$@"
    echo
    if command -v tcpdump >/dev/null; then
        echo "== the same frames, as tcpdump reads the pcap"
        tcpdump -nr "$pcap" 2>/dev/null
    else
        echo "(tcpdump is not installed: apt-get install tcpdump, and this shows the same frames as tcpdump reads them)"
    fi
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: the demo makes namespaces and attaches XDP — run it as root (or scripts/demo.sh --sim)" >&2
    exit 1
fi
# shellcheck disable=SC2086 # the package lists are words
ensure_packages $BUILD_PACKAGES $RUN_PACKAGES
ensure_rust
cargo build --release --locked
bin=$PWD/target/release/xtcp
secs=${DEMO_SECS:-5}
cpus=$(nproc)
server_cpu=$((cpus > 1 ? 1 : 0))

name="demo$$"
work=$(mktemp -d /tmp/xtcp-demo.XXXXXX)
# The server's pid, set by start_serving (scripts/lib.sh) as soon as it starts the server: a Ctrl-C while it waits
# for the server to serve finds it here too.
SERVER_PID=""
# Every step runs whatever the server's exit status: one that crashed, or exits 130 on a second Ctrl-C, must not
# leave the namespaces and the work directory behind. Ctrl-C and SIGTERM are ignored from here on, as the INT
# trap's `exit 130` would end this EXIT trap before its end (a second Ctrl-C still reaches the server, which then
# exits at once).
cleanup() {
    trap '' INT TERM
    if [ -n "$SERVER_PID" ]; then
        kill -INT "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    scripts/netns.sh down "$name"
    rm -rf "$work"
}
trap cleanup EXIT
# After Ctrl-C, which `xtcp load` catches to print its summary and exit 0, the demo stops instead of going on with
# the next workload.
trap 'exit 130' INT TERM
eval "$(scripts/netns.sh up "$name")"

# serve STACK COMMAND ARGS...: starts the server in xtcp's namespace and waits until it says it serves.
serve() {
    local stack=$1
    shift
    start_serving "$NS_XTCP" "$server_cpu" "$work/server.log" "$bin" "$@" --stack "$stack" --iface "$IF_XTCP"
}

stop_server() {
    if ! kill -INT "$SERVER_PID" 2>/dev/null; then
        echo "error: the server ended during the run:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    wait "$SERVER_PID" || true
    SERVER_PID=""
}

# measure LABEL STACK SERVER-ARGS -- LOAD-ARGS: one server, one load run from the kernel's namespace, JSON saved.
measure() {
    local label=$1 stack=$2
    shift 2
    local server_args=()
    while [ "$1" != "--" ]; do server_args+=("$1"); shift; done
    shift
    serve "$stack" "${server_args[@]}"
    echo "== $label, $stack on both ends" >&2
    ip netns exec "$NS_KERNEL" taskset -c 0 "$bin" load --stack "$stack" --iface "$IF_KERNEL" \
        --duration "${secs}s" --warmup 1s --json "$@" >"$work/$label-$stack.json"
    stop_server
}

# The cache-line round trip between the two CPUs, before and after: on a VM the host may move the vCPUs between
# one die and two, and one-connection rates follow it (docs/benchmarks.md, "The machine's two speeds").
cacheline() {
    [ "$server_cpu" -ne 0 ] || return 0
    [ -x "$work/cacheline" ] || clang -O2 -pthread bench/cacheline.c -o "$work/cacheline" || return 0
    "$work/cacheline" 0 "$server_cpu" >>"$work/cacheline.txt" 2>/dev/null || true
}
cacheline
for stack in xdp kernel; do
    measure http-16 "$stack" http --port 8080 --body-bytes 600 -- \
        --target "$IP_XTCP:8080" --mode http --connections 16
    measure echo-1 "$stack" echo --port 7007 -- \
        --target "$IP_XTCP:7007" --mode echo --connections 1 --message-bytes 64
done
cacheline

python3 - "$work" <<'PY'
import json, sys, os
work = sys.argv[1]
rows = [("http-16", "HTTP keep-alive, 600-byte body, 16 connections"), ("echo-1", "echo, 64-byte messages, 1 connection")]
print()
print(f"{'workload':<48} {'stack':<7} {'requests/s':>12} {'p50 µs':>8} {'p99 µs':>8} {'errors':>7}")
for key, title in rows:
    r = {s: json.load(open(os.path.join(work, f"{key}-{s}.json"))) for s in ("xdp", "kernel")}
    for s, label in (("xdp", "xtcp"), ("kernel", "kernel")):
        x = r[s]
        print(f"{title if s == 'xdp' else '':<48} {label:<7} {x['requests_per_sec']:>12,.0f} "
              f"{x['latency']['p50_us']:>8} {x['latency']['p99_us']:>8} {x['failed']:>7}")
    k = r["kernel"]["requests_per_sec"] or float("nan")
    print(f"{'':<48} {'ratio':<7} {r['xdp']['requests_per_sec'] / k:>11.2f}x")
try:
    ns = open(os.path.join(work, "cacheline.txt")).read().split()
except OSError:
    ns = []
if len(ns) == 2:
    print(f"\ncache-line round trip between the two CPUs: {ns[0]} ns before, {ns[1]} ns after (one die: about 55 ns,"
          " two: about 330 on the\nproject's VM, where one-connection rates are a third lower across two dies;"
          " docs/benchmarks.md)")
PY
