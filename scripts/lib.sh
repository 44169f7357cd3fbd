# Shared helpers for the scripts: sourced, not run.

# Installs the Debian packages that are missing (needs root; asks apt-get only when something is missing).
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages: ${missing[*]} — run as root, or: apt-get install ${missing[*]}" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Makes sure cargo, rustfmt and clippy are there; Debian's own Rust is too old for this crate.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found — install Rust 1.85 or newer (rustup) and run again" >&2
        return 1
    fi
    local v
    v=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | head -1)" != "1.85.0" ]; then
        echo "error: rustc $v is older than 1.85 — update Rust (rustup update) and run again" >&2
        return 1
    fi
    for comp in rustfmt clippy; do
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null 2>&1 && rustup component add "$comp" >/dev/null 2>&1 || {
                echo "error: cargo $comp missing — rustup component add $comp" >&2
                return 1
            }
        fi
    done
}

# What building xtcp needs: clang, llvm and libbpf-dev build the XDP program; make, m4, gcc, libelf-dev, zlib1g-dev
# and pkg-config build the vendored libbpf and libxdp; bindgen uses libclang, which clang brings.
BUILD_PACKAGES="ca-certificates clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make m4 gcc libc6-dev"
# What the veth tests and the demo drive: namespaces, offload settings, ping, Python sockets, captures, nc and
# curl as kernel clients, nftables for the impaired middle namespace.
RUN_PACKAGES="iproute2 ethtool iputils-ping python3 tcpdump netcat-openbsd curl nftables wrk util-linux"

# start_serving NS CPU LOG COMMAND...: runs COMMAND in the background inside namespace NS, pinned to CPU, its output
# in LOG, and waits (10 s at most) until it says it is serving; its pid is then in SERVER_PID. When it does not
# start, stops it if it still runs (SIGTERM, SIGKILL 5 s later), prints its log and exits: the callers take
# SERVER_PID into their cleanup only once it serves, so a process left here would keep running (an XDP program
# attached) in a namespace their EXIT trap deletes.
start_serving() {
    local ns=$1 cpu=$2 log=$3
    shift 3
    ip netns exec "$ns" taskset -c "$cpu" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q "serving" "$log" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    echo "error: $* did not start:" >&2
    cat "$log" >&2
    exit 1
}
