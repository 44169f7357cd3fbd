#!/usr/bin/env bash
# End-to-end benchmarks: xtcp against the kernel's TCP on the same veth pair, measured in one run (issue 8).
#
# Makes two namespaces joined by a veth pair (scripts/netns.sh) and runs every workload twice: xtcp over AF_XDP on
# both ends (`xtcp echo|http --stack xdp` served, `xtcp load --stack xdp` loading), then the kernel's TCP on both
# ends (`--stack kernel`: the same application code over ordinary sockets). The server is pinned to CPU 1 and the
# load generator to CPU 0 (taskset; xtcp's loop pins itself inside that set), the same for both stacks. Each run's
# `xtcp load --json` report is kept; bench/e2e.py merges them into one JSON file and prints a table with xtcp/kernel
# ratios; with --plots DIR it writes results.json and results.md there, and bench/plot.rs (plotters, `cargo run
# --example plot`) draws the SVG plots from them. Removes every namespace and process it made, even on failure. Root.
#
#   scripts/bench.sh                      # every workload, 5 s each, 3 times (about 12 minutes after the build)
#   scripts/bench.sh --quick              # echo-1, echo-64, cps for 2 s each, 3 times (about 70 s): fails when an
#                                         # xtcp/kernel ratio is under its floor (FLOORS in bench/e2e.py)
#   BENCH_BIN=target/ci/xtcp scripts/bench.sh   # an xtcp already built (default: a release build, with LTO)
#   BENCH_REPEATS=1 scripts/bench.sh      # each workload once (default 3: the pair with the median ratio is kept)
#   scripts/bench.sh --plots docs/bench   # also write results.json, results.md and the SVG plots there
#   BENCH_SECS=10 scripts/bench.sh        # longer runs
#   BENCH_ONLY="echo-1 cps" scripts/bench.sh   # only these (echo-N, block-N, http-N, cps, bulk, bulk-echo, raw-N,
#                                         # raw-stream-B, wrk-N, hold-N, poll-N, idle)
#   scripts/bench.sh --soak [SECS]        # only the soak (default 600 s): `xtcp http` under new-connection-per-request
#                                         # load with TIME_WAIT on; fails on any load error (a port or table that ran
#                                         # out) or when either process's memory grew past the first minute's
#
# hold-100k and hold-1m (part of the full run, once each whatever BENCH_REPEATS says) open and hold that many idle
# connections (`xtcp load --hold`, from 9 and 64 source addresses) while 64 more echo, and sample every half second
# the server's resident memory and the kernel's slab (/proc/meminfo): memory per connection is the growth over the
# held count — the server's RSS for xtcp; for the kernel its RSS plus half the slab's growth (both ends' sockets
# live in this one kernel). Where `ulimit -n` keeps one process from holding them all, extra process pairs hold
# the kernel's rest (see `hold` below).
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
    workloads=${BENCH_ONLY:-"echo-1 echo-16 echo-64 echo-1024 block-1 cps http-16 http-64 bulk bulk-echo poll-1 idle raw-1 raw-64 raw-stream-64 raw-stream-1514 hold-100k hold-1m"}
    # wrk against xtcp http and against nginx, when nginx is installed (apt-get install nginx-light).
    if [ -z "${BENCH_ONLY:-}" ] && command -v nginx >/dev/null; then workloads="$workloads wrk-16"; fi
fi
cpus=$(nproc)
server_cpu=$((cpus > 1 ? 1 : 0))
client_cpu=0
# 1024 kernel connections need more than the usual 1024 open files, and a million held ones a million.
ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true

name="bench$$"
work=$(mktemp -d /tmp/xtcp-bench.XXXXXX)
server=""
extra_pids=()
# stop_extras: ends the extra processes a hold run started.
stop_extras() {
    for pid in "${extra_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${extra_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    extra_pids=()
}
# Ctrl-C and SIGTERM are ignored from the start: the INT trap's `exit 130` would end this EXIT trap before the
# namespaces and the work directory are removed (a second Ctrl-C still reaches the servers, which then exit at once).
cleanup() {
    trap '' INT TERM
    stop_extras
    if [ -n "$server" ]; then
        kill -INT "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    scripts/netns.sh down "$name"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The cache-line round trip between the two CPUs, read before and after each run: a VM's host may move its vCPUs
# between one die and two, and the one-connection figures follow (docs/benchmarks.md, "The machine's two speeds").
cacheline=""
if [ "$server_cpu" -ne "$client_cpu" ] && clang -O2 -pthread bench/cacheline.c -o "$work/cacheline"; then
    cacheline=$work/cacheline
fi
# Writes one reading (ns) into $1, when there is a probe to read with.
read_cacheline() {
    [ -z "$cacheline" ] || "$cacheline" "$client_cpu" "$server_cpu" >"$1" 2>/dev/null || true
}
aliases=()
# hold-N opens up to a million connections to one server port, from up to 64 addresses.
[[ " $workloads " == *" hold-"* ]] && aliases=(--aliases 63)
eval "$(scripts/netns.sh up "$name" "${aliases[@]}")"

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
    # A run of a set number of requests (--requests) brings its own limit and warm-up.
    local limit=(--duration "${secs}s" --warmup "$warmup")
    [[ " $* " == *" --requests "* ]] && limit=()
    if ! ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" load --stack "$stack" --iface "$IF_KERNEL" \
        "${limit[@]}" --json "$@" >"$out.json" 2>"$out.err"; then
        echo "warning: $key on $stack failed: $(tail -1 "$out.err")" >&2
        rm -f "$out.json"
    fi
    stop_server
}

# hold_count KEY: the connections hold-100k, hold-1m or hold-N holds.
hold_count() {
    local n=${1#hold-}
    case "$n" in
        *k) echo $((${n%k} * 1000)) ;;
        *m) echo $((${n%m} * 1000000)) ;;
        *) echo "$n" ;;
    esac
}

# kib_of FILE FIELD: a "Field: N kB" line's number (0 when the file is gone).
kib_of() {
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "$1" 2>/dev/null || echo 0
}

# hold KEY STACK: `xtcp load --hold N` — N idle connections opened first and held while 64 more echo 64-byte
# messages — with the servers' RSS, the load generator's, the kernel's slab and its count of TCP sockets in the
# server's namespace sampled every half second; the peaks and the readings before the load go to KEY-STACK-REP.mem
# as JSON. A process may hold only as many kernel sockets as it may open files (`ulimit -n`; raising the hard
# limit needs CAP_SYS_RESOURCE, which a container may lack): past that, the kernel's share is held by extra pairs
# of processes — a server on a port of its own and a load holding its part at one request a second.
hold() {
    local key=$1 stack=$2 out="$work/$1-$2-$rep" n sources
    n=$(hold_count "$key")
    # 12,000 connections an address, at most 64 addresses: the kernel binds a source port before it knows the
    # server, trying odd ports first, and slows to a crawl once an address's 32,000 odd ones run short.
    sources=$((n / 12000 + 1))
    ((sources > 64)) && sources=64
    # Ports from 1024 up on every source address, for both stacks (the namespace is the bench's own).
    local range
    range=$(ip netns exec "$NS_KERNEL" sysctl -n net.ipv4.ip_local_port_range | tr -s '\t ' ' ')
    ip netns exec "$NS_KERNEL" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
    local ports=()
    [ "$stack" = xdp ] && ports=(--ephemeral-ports 1024-65535)
    serve "$stack" echo --port 7007 --max-connections $((n + 65536))
    local servers=("$server") main_hold=$n extras=0 per
    per=$(($(ulimit -n) - 1000))
    if [ "$stack" = kernel ] && ((n > per)); then
        main_hold=$per
        extras=$(((n - per + per - 1) / per))
        for i in $(seq "$extras"); do
            start_serving "$NS_XTCP" "$server_cpu" "$work/extra-server-$i.log" "$bin" echo --stack kernel \
                --iface "$IF_XTCP" --port $((7100 + i))
            servers+=("$SERVER_PID")
            extra_pids+=("$SERVER_PID")
        done
    fi
    # sum_rss: the servers' resident memory, KiB.
    sum_rss() {
        local pid t=0
        for pid in "${servers[@]}"; do t=$((t + $(kib_of "/proc/$pid/status" VmRSS))); done
        echo "$t"
    }
    # tcp_inuse: TCP sockets of the kernel in the servers' namespace.
    tcp_inuse() { ip netns exec "$NS_XTCP" awk '$1 == "TCP:" { print $3 }' /proc/net/sockstat; }
    local rss0 slab0 rss=0 lrss=0 slab=0 inuse=0 r l s i t0 extra_open_s=0
    rss0=$(sum_rss)
    slab0=$(kib_of /proc/meminfo Slab)
    if ((extras > 0)); then
        local rest=$((n - per)) share have=0 last=-1 still=0
        t0=$(date +%s.%N)
        for i in $(seq "$extras"); do
            share=$((rest < per ? rest : per))
            rest=$((rest - share))
            ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" load --stack kernel --iface "$IF_KERNEL" \
                --target "$IP_XTCP:$((7100 + i))" --mode echo --connections 1 --rate 1 --hold "$share" \
                --sources "$sources" --duration 1h --warmup 0s --json >"$work/extra-load-$i.json" 2>&1 &
            extra_pids+=($!)
        done
        echo "== $key: $((n - per)) of the kernel's connections held by $extras extra pairs of processes" >&2
        # Until they hold their share (the listeners and their one busy connection each aside), or 20 s go by
        # without progress.
        while ((have < n - per + 2 * extras)) && ((still < 40)); do
            sleep 0.5
            have=$(tcp_inuse)
            if ((have == last)); then still=$((still + 1)); else still=0; fi
            last=$have
        done
        extra_open_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    fi
    echo "== $key: $n connections held while 64 echo, $stack on both ends" >&2
    ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" load --stack "$stack" --iface "$IF_KERNEL" \
        --target "$IP_XTCP:7007" --mode echo --connections 64 --message-bytes 64 --hold "$main_hold" \
        --sources "$sources" "${ports[@]}" --max-connections $((n + 65536)) --timeout 30s \
        --duration "${secs}s" --warmup "$warmup" --json >"$out.json" 2>"$out.err" &
    local load=$!
    while kill -0 "$load" 2>/dev/null; do
        r=$(sum_rss)
        l=$(kib_of "/proc/$load/status" VmRSS)
        s=$(kib_of /proc/meminfo Slab)
        i=$(tcp_inuse)
        ((r > rss)) && rss=$r
        ((l > lrss)) && lrss=$l
        ((s > slab)) && slab=$s
        ((i > inuse)) && inuse=$i
        sleep 0.5
    done
    if ! wait "$load"; then
        echo "warning: $key on $stack failed: $(tail -1 "$out.err")" >&2
        rm -f "$out.json"
    fi
    # Sockets that are not held: the listeners, the 64 busy connections and the extra loads' one each.
    printf '{"held_target": %d, "server_rss_kib": %d, "server_rss_before_kib": %d, "load_rss_kib": %d, ' \
        "$n" "$rss" "$rss0" "$lrss" >"$out.mem"
    printf '"slab_kib": %d, "slab_before_kib": %d, "tcp_inuse_peak": %d, "not_held_sockets": %d, ' \
        "$slab" "$slab0" "$inuse" $((1 + 64 + 2 * extras)) >>"$out.mem"
    printf '"extra_pairs": %d, "extra_open_s": %s}\n' "$extras" "$extra_open_s" >>"$out.mem"
    stop_extras
    stop_server
    ip netns exec "$NS_KERNEL" sysctl -qw net.ipv4.ip_local_port_range="$range"
}

# run KEY STACK: the workload KEY on STACK.
run() {
    local key=$1 stack=$2
    local echo_srv=(echo --port 7007) http_srv=(http --port 8080 --body-bytes 600)
    case "$key" in
        echo-*)
            measure "$key" "$stack" "${echo_srv[@]}" -- --target "$IP_XTCP:7007" --mode echo \
                --connections "${key#echo-}" --message-bytes 64 ;;
        block-*)
            # Echo with both ends told to sleep as soon as they are idle (--busy-poll-us 0): the kernel's loop then
            # blocks in epoll_wait between requests, as ordinary kernel servers and clients do; xtcp's adaptive
            # window still polls through gaps as short as these.
            measure "$key" "$stack" "${echo_srv[@]}" --busy-poll-us 0 -- --target "$IP_XTCP:7007" --mode echo \
                --connections "${key#block-}" --message-bytes 64 --busy-poll-us 0 ;;
        http-*)
            measure "$key" "$stack" "${http_srv[@]}" -- --target "$IP_XTCP:8080" --mode http \
                --connections "${key#http-}" ;;
        cps)
            # A new connection for each request: connect, one request, a 64-byte answer, the server closes first
            # (Connection: close) and holds TIME_WAIT.
            measure "$key" "$stack" http --port 8080 --body-bytes 64 -- --target "$IP_XTCP:8080" --mode http \
                --connections 16 --new-connection-per-request ;;
        raw-*)
            # The AF_XDP ceiling, no TCP (xtcp only): frames bounced by `xtcp reflect`, N in flight; or raw-stream-B:
            # B-byte frames streamed one way and counted by the reflector.
            [ "$stack" = xdp ] || return 0
            serve_raw
            local how=(--in-flight "${key#raw-}")
            [[ "$key" == raw-stream-* ]] && how=(--stream --frame-bytes "${key#raw-stream-}")
            echo "== $key: frames through xtcp reflect, no TCP" >&2
            if ! ip netns exec "$NS_KERNEL" taskset -c "$client_cpu" "$bin" reflect --iface "$IF_KERNEL" --port 9001 \
                --ping "$IP_XTCP:9000" "${how[@]}" --duration "${secs}s" --json \
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
        hold-*) hold "$key" "$stack" ;;
        poll-*)
            # Adaptive polling against pure busy-polling (xtcp only, both in this one call): echo with N
            # connections as in echo-N, once with the default loop (KEY-xdp-REP.json) and once with both ends told
            # never to sleep (KEY-busy-REP.json).
            [ "$stack" = xdp ] || return 0
            local n=${key#poll-} never=1000000000 f out="$work/$key-xdp-$rep"
            measure "$key" xdp "${echo_srv[@]}" -- --target "$IP_XTCP:7007" --mode echo --connections "$n" \
                --message-bytes 64
            for f in json err; do [ ! -e "$out.$f" ] || mv "$out.$f" "$work/$key-adaptive-$rep.$f"; done
            measure "$key" xdp "${echo_srv[@]}" --busy-poll-us "$never" -- --target "$IP_XTCP:7007" --mode echo \
                --connections "$n" --message-bytes 64 --busy-poll-us "$never"
            for f in json err; do
                [ ! -e "$out.$f" ] || mv "$out.$f" "$work/$key-busy-$rep.$f"
                [ ! -e "$work/$key-adaptive-$rep.$f" ] || mv "$work/$key-adaptive-$rep.$f" "$out.$f"
            done ;;
        idle)
            # What a server with no traffic costs: its CPU time (utime + stime, /proc/PID/stat) over the run, after
            # a second to settle, as a share of one core.
            serve "$stack" "${echo_srv[@]}"
            echo "== idle, $stack server with no traffic (run $rep of $repeats)" >&2
            sleep 1
            local t0 t1
            t0=$(awk '{ print $14 + $15 }' "/proc/$server/stat")
            sleep "$secs"
            t1=$(awk '{ print $14 + $15 }' "/proc/$server/stat")
            python3 -c 'import json, os, sys; t, s = int(sys.argv[1]), float(sys.argv[2]);
print(json.dumps({"idle_cpu_percent": round(100 * t / os.sysconf("SC_CLK_TCK") / s, 2), "secs": s}))' \
                "$((t1 - t0))" "$secs" >"$work/$key-$stack-$rep.json"
            stop_server ;;
        bulk)
            # One connection, 1 GiB one way to a discard server, timed until the server's FIN says it read it all.
            measure "$key" "$stack" echo --discard --port 7007 -- --target "$IP_XTCP:7007" --mode send \
                --connections 1 --message-bytes 1GiB --requests 1 --warmup 0s --timeout 60s ;;
        bulk-echo)
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
    reps=$repeats
    # Holding a million connections takes a minute or two a stack: once is enough.
    [[ $key == hold-* ]] && reps=1
    for rep in $(seq "$reps"); do
        for stack in xdp kernel; do
            # The cache-line round trip between the two CPUs before and after the run: the VM's vCPU placement
            # (docs/benchmarks.md, "The machine's two speeds"), and whether it changed during the run.
            read_cacheline "$work/$key-$stack-$rep.cacheline"
            run "$key" "$stack"
            read_cacheline "$work/$key-$stack-$rep.cacheline-after"
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
status=0
python3 bench/e2e.py "${args[@]}" || status=$?
if [ -n "$plots" ]; then
    # e2e.py wrote $plots/results.json before the checks that fail it (floors, failed runs): plot the run either way.
    cargo run --release --locked --example plot -- "$plots/results.json" "$plots"
fi
exit "$status"
