#!/usr/bin/env bash
# End-to-end benchmarks: xtcp against the kernel's TCP on the same veth pair, measured in one run (issue 8).
#
# Makes two namespaces joined by a veth pair (scripts/netns.sh) and runs every workload twice: xtcp over AF_XDP on
# both ends (`xtcp echo|http --stack xdp` served, `xtcp load --stack xdp` loading), then the kernel's TCP on both
# ends (`--stack kernel`: the same application code over ordinary sockets). The server is pinned to CPU 1 and the
# load generator to CPU 0 (taskset; xtcp's loop pins itself inside that set), the same for both stacks. Each run's
# `xtcp load --json` report is kept; bench/e2e.py merges them into one JSON file, prints a table with xtcp/kernel
# ratios and, with --plots, draws SVG plots. Removes every namespace and process it made, even on failure. Root.
#
#   scripts/bench.sh                      # every workload, 5 s each, 3 times (about 7 minutes after the build)
#   scripts/bench.sh --quick              # echo-1, echo-64, cps for 2 s each, 3 times (about 70 s): fails when an
#                                         # xtcp/kernel ratio is under its floor (FLOORS in bench/e2e.py)
#   BENCH_BIN=target/ci/xtcp scripts/bench.sh   # an xtcp already built (default: a release build, with LTO)
#   BENCH_REPEATS=1 scripts/bench.sh      # each workload once (default 3: the pair with the median ratio is kept)
#   scripts/bench.sh --plots docs/bench   # also write results.json and the SVG plots there
#   BENCH_SECS=10 scripts/bench.sh        # longer runs
#   BENCH_ONLY="echo-1 cps" scripts/bench.sh   # only these (echo-N, http-N, cps, bulk, raw-N, wrk-N)
#   scripts/bench.sh --soak [SECS]        # only the soak (default 600 s): `xtcp http` under new-connection-per-request
#                                         # load with TIME_WAIT on; fails on any load error (a port or table that ran
#                                         # out) or when either process's memory grew past the first minute's
#
# Each repetition runs xtcp then the kernel back to back, so the two see about the same machine; the reported pair is
# the repetition with the median xtcp/kernel ratio (every ratio is kept in the JSON). Results go to
# target/bench/results.json (and the table to stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

quick=0
plots=""
soak=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --soak)
            soak=600; shift
            if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then soak=$1; shift; fi
            [ "$soak" -ge 60 ] || { echo "error: --soak wants at least 60 seconds" >&2; exit 2; } ;;
        --plots) [ $# -ge 2 ] || { echo "error: --plots wants a directory" >&2; exit 2; }; plots=$2; shift 2 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 — see scripts/bench.sh --help" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "error: the benchmarks make namespaces and attach XDP — run scripts/bench.sh as root" >&2
    exit 1
fi
# shellcheck disable=SC2086 # the package lists are words
ensure_packages $BUILD_PACKAGES $RUN_PACKAGES
ensure_rust
# BENCH_BIN names a binary already built (scripts/test.sh passes its own); otherwise a release build.
if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
else
    cargo build --release --locked --bin xtcp
    bin=$PWD/target/release/xtcp
fi

repeats=${BENCH_REPEATS:-3}
if [ "$quick" -eq 1 ]; then
    secs=${BENCH_SECS:-2}
    warmup=500ms
    workloads=${BENCH_ONLY:-"echo-1 echo-64 cps"}
else
    secs=${BENCH_SECS:-5}
    warmup=1s
    workloads=${BENCH_ONLY:-"echo-1 echo-16 echo-64 echo-1024 cps http-16 http-64 bulk raw-1 raw-64"}
    # wrk against xtcp http and against nginx, when nginx is installed (apt-get install nginx-light).
    if [ -z "${BENCH_ONLY:-}" ] && command -v nginx >/dev/null; then workloads="$workloads wrk-16"; fi
fi
cpus=$(nproc)
server_cpu=$((cpus > 1 ? 1 : 0))
client_cpu=0
# 1024 kernel connections need more than the usual 1024 open files.
ulimit -n 65536 2>/dev/null || true

name="bench$$"
work=$(mktemp -d /tmp/xtcp-bench.XXXXXX)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill -INT "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    scripts/netns.sh down "$name"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$(scripts/netns.sh up "$name")"

# serve STACK COMMAND ARGS...: starts the server in xtcp's namespace and waits until it says it serves.
serve() {
    local stack=$1
    shift
    start_serving "$NS_XTCP" "$server_cpu" "$work/server.log" "$bin" "$@" --stack "$stack" --iface "$IF_XTCP"
    server=$SERVER_PID
}

# serve_raw: the null reflector in xtcp's namespace, pinned like the servers.
serve_raw() {
    start_serving "$NS_XTCP" "$server_cpu" "$work/server.log" "$bin" reflect --iface "$IF_XTCP" --port 9000
    server=$SERVER_PID
}

# serve_nginx: nginx with one worker on the kernel's TCP in xtcp's namespace, a 600-byte page, keep-alive, no log.
serve_nginx() {
    mkdir -p "$work/www"
    head -c 600 /dev/zero | tr '\0' x >"$work/www/index.html"
    cat >"$work/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen $IP_XTCP:8080; root $work/www; }
}
EOF
    ip netns exec "$NS_XTCP" taskset -c "$server_cpu" nginx -c "$work/nginx.conf" >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        ip netns exec "$NS_XTCP" ss -ltn | grep -q ":8080 " && return 0
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    echo "error: nginx did not start:" >&2
    cat "$work/server.log" "$work/nginx-error.log" >&2
    exit 1
}

stop_server() {
    kill -INT "$server" 2>/dev/null || true
    wait "$server" || true
    server=""
}

# measure KEY STACK SERVER-ARGS -- LOAD-ARGS: one server, one load run from the kernel's namespace, JSON saved as
# KEY-STACK-REP.json.
measure() {
    local key=$1 stack=$2 out="$work/$1-$2-$rep"
    shift 2
    local server_args=()
    while [ "$1" != "--" ]; do server_args+=("$1"); shift; done
    shift
    serve "$stack" "${server_args[@]}"
    echo "== $key, $stack on both ends (run $rep of $repeats)" >&2
    if ! ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" load --stack "$stack" --iface "$IF_KERNEL" \
        --duration "${secs}s" --warmup "$warmup" --json "$@" >"$out.json" 2>"$out.err"; then
        echo "warning: $key on $stack failed: $(tail -1 "$out.err")" >&2
        rm -f "$out.json"
    fi
    stop_server
}

# run KEY STACK: the workload KEY on STACK.
run() {
    local key=$1 stack=$2
    local echo_srv=(echo --port 7007) http_srv=(http --port 8080 --body-bytes 600)
    case "$key" in
        echo-*)
            measure "$key" "$stack" "${echo_srv[@]}" -- --target "$IP_XTCP:7007" --mode echo \
                --connections "${key#echo-}" --message-bytes 64 ;;
        http-*)
            measure "$key" "$stack" "${http_srv[@]}" -- --target "$IP_XTCP:8080" --mode http \
                --connections "${key#http-}" ;;
        cps)
            # A new connection for each request: connect, one request, a 64-byte answer, the server closes first
            # (Connection: close) and holds TIME_WAIT.
            measure "$key" "$stack" http --port 8080 --body-bytes 64 -- --target "$IP_XTCP:8080" --mode http \
                --connections 16 --new-connection-per-request ;;
        raw-*)
            # The AF_XDP ceiling, no TCP (xtcp only): frames bounced by `xtcp reflect`, N in flight.
            [ "$stack" = xdp ] || return 0
            serve_raw
            echo "== $key: frames ping-ponged through xtcp reflect, no TCP" >&2
            if ! ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" reflect --iface "$IF_KERNEL" --port 9001 \
                --ping "$IP_XTCP:9000" --in-flight "${key#raw-}" --duration "${secs}s" --json \
                >"$work/$key-xdp-$rep.json" 2>"$work/$key-xdp-$rep.err"; then
                echo "warning: $key failed: $(tail -1 "$work/$key-xdp-$rep.err")" >&2
                rm -f "$work/$key-xdp-$rep.json"
            fi
            stop_server ;;
        wrk-*)
            # The same kernel client, wrk, against xtcp http and against nginx (one worker) on the kernel's TCP.
            if [ "$stack" = xdp ]; then
                serve xdp "${http_srv[@]}"
            else
                serve_nginx
            fi
            local who=nginx
            [ "$stack" = kernel ] || who="xtcp http"
            echo "== $key: wrk against $who (run $rep of $repeats)" >&2
            ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" wrk -t1 -c"${key#wrk-}" -d"${secs}s" --latency \
                "http://$IP_XTCP:8080/" >"$work/$key-$stack-$rep.wrk" 2>&1 || true
            python3 bench/e2e.py --wrk "$work/$key-$stack-$rep.wrk" >"$work/$key-$stack-$rep.json" ||
                rm -f "$work/$key-$stack-$rep.json"
            stop_server ;;
        bulk)
            # One connection, 1 MiB messages echoed back: as many bytes each way as fit.
            measure "$key" "$stack" "${echo_srv[@]}" -- --target "$IP_XTCP:7007" --mode echo \
                --connections 1 --message-bytes 1048576 ;;
        *) echo "error: unknown workload $key" >&2; exit 2 ;;
    esac
}

# soak SECS: open/close churn for SECS against `xtcp http` (the server closes first and holds TIME_WAIT), both
# processes' resident memory and the server's state sampled every 10 s into soak.tsv; then the verdict.
soak() {
    local secs=$1 out=target/bench/soak.tsv
    mkdir -p target/bench
    serve xdp http --port 8080 --body-bytes 64
    echo "== soak: $secs s of new-connection-per-request load, 16 connections, TIME_WAIT on" >&2
    ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" load --stack xdp --iface "$IF_KERNEL" \
        --target "$IP_XTCP:8080" --mode http --connections 16 --new-connection-per-request \
        --duration "${secs}s" --warmup 1s --json >"$work/soak.json" 2>"$work/soak.err" &
    local load=$!
    printf 't_s\tserver_rss_kib\tload_rss_kib\tserver_time_wait\tserver_conns_opened\tserver_buffer_bytes\n' >"$out"
    local t=0
    while kill -0 "$load" 2>/dev/null; do
        sleep 10
        t=$((t + 10))
        kill -0 "$load" 2>/dev/null || break
        local srss lrss stat
        srss=$(awk '/^VmRSS/ { print $2 }' "/proc/$server/status" 2>/dev/null || echo 0)
        # `ip netns exec` and taskset exec what they run: the PIDs are the xtcp processes'.
        lrss=$(awk '/^VmRSS/ { print $2 }' "/proc/$load/status" 2>/dev/null || echo 0)
        stat=$("$bin" stat --pid "$server" --json 2>/dev/null || echo '{}')
        python3 - "$t" "$srss" "$lrss" "$stat" >>"$out" <<'PY'
import json, sys
t, srss, lrss, stat = sys.argv[1:]
cores = json.loads(stat) if stat.startswith("[") else []
tw = sum(c["states"].get("TIME_WAIT", 0) for c in cores)
opened = sum(c["counters"].get("conns_opened", 0) for c in cores)
buf = sum(c.get("device", {}).get("buffer_bytes", 0) for c in cores)
print(f"{t}\t{srss}\t{lrss}\t{tw}\t{opened}\t{buf}")
PY
    done
    wait "$load" || { echo "error: the soak's load failed: $(tail -1 "$work/soak.err")" >&2; exit 1; }
    stop_server
    python3 bench/e2e.py --soak "$out" --soak-report "$work/soak.json"
}

if [ "$soak" -gt 0 ]; then
    soak "$soak"
    exit 0
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for key in $workloads; do
    for rep in $(seq "$repeats"); do
        for stack in xdp kernel; do
            run "$key" "$stack"
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p target/bench
args=(--work "$work" --workloads "$workloads" --repeats "$repeats" --secs "$secs"
    --server-cpu "$server_cpu" --client-cpu "$client_cpu"
    --load-before "$load_before" --load-after "$load_after" --out target/bench/results.json)
[ "$quick" -eq 1 ] && args+=(--check-floors)
[ -n "$plots" ] && args+=(--plots "$plots")
python3 bench/e2e.py "${args[@]}"
