#!/usr/bin/env bash
# Captures real Linux TCP frames for the fuzz corpus: run once by hand, as root (not part of CI).
#
#   scripts/capture-linux-seeds.sh [OUT]     (default fuzz/linux-capture.pcap)
#   XTCP_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions linux
#                                            turns the capture into fuzz/corpus/{wire,stack}/linux-* (see
#                                            src/fuzz/linux.rs)
#
# Two namespaces from scripts/netns.sh with a bridge between them (--middle): a python3 server in xtcp's namespace
# (NS_XTCP, standing in for xtcp: it is the side the stack seeds replace by the fuzz harness) and a python3 client
# in the kernel's (NS_KERNEL), both plain kernel sockets with Linux's default options. tcpdump records on the
# server's veth, so the capture holds what the server received and sent. Checksum offload, TSO, GSO and GRO are off
# on both ends, so every frame carries complete checksums. The scenarios, one server port each (the table
# SCENARIOS in src/fuzz/linux.rs names them):
#
#   8080 exchange   handshake, 2000 bytes client to server, 3000 back, the client's FIN, then the server's
#   8081 sack       8688 bytes (6 segments) client to server; the middle drops the third, so the server SACKs
#   8082 refused    a SYN to a port nobody listens on: RST
#   8083 reset      1000 bytes, then the client closes with SO_LINGER 0: RST
#
# The namespaces get a name of their own (the PID in it) and go away on every exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-fuzz/linux-capture.pcap}
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (it makes network namespaces)" >&2; exit 1; }
for tool in tcpdump nft ethtool python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool missing" >&2; exit 1; }
done

name="linuxseeds-$$"
tmp=$(mktemp -d)
server_pid=""
tcpdump_pid=""
cleanup() {
    [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
    [ -z "$tcpdump_pid" ] || kill "$tcpdump_pid" 2>/dev/null || true
    scripts/netns.sh down "$name"
    rm -rf "$tmp"
}
trap cleanup EXIT
eval "$(scripts/netns.sh up "$name" --middle)"

# netns.sh turns the offloads off on the kernel's end; the server's end too, and GRO, so frames stay as sent.
ip netns exec "$NS_XTCP" ethtool -K "$IF_XTCP" tx off tso off gso off gro off >/dev/null
ip netns exec "$NS_KERNEL" ethtool -K "$IF_KERNEL" gro off >/dev/null
# The sack scenario's loss: the third data segment to port 8081 (numgen counts only frames that got that far).
ip netns exec "$NS_MIDDLE" nft -f - <<'EOF'
table bridge xtcp_seeds {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 8081 meta length > 500 numgen inc mod 1000 == 2 counter drop
  }
}
EOF

cat >"$tmp/peers.py" <<'EOF'
import socket, struct, sys, time

def read_until(conn, n=None):
    got = b""
    while n is None or len(got) < n:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got

def server(ip):
    listeners = {}
    for port in (8080, 8081, 8083):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(4)
        listeners[port] = s
    print("ready", flush=True)
    conn, _ = listeners[8080].accept()
    assert len(read_until(conn, 2000)) == 2000
    conn.sendall(b"s" * 3000)
    read_until(conn)
    conn.close()
    conn, _ = listeners[8081].accept()
    assert len(read_until(conn)) == 8688
    conn.close()
    conn, _ = listeners[8083].accept()
    read_until(conn)
    conn.close()

def client(ip):
    s = socket.create_connection((ip, 8080))
    s.sendall(b"c" * 2000)
    assert len(read_until(s, 3000)) == 3000
    s.shutdown(socket.SHUT_WR)
    read_until(s)
    s.close()
    time.sleep(0.3)
    s = socket.create_connection((ip, 8081))
    s.sendall(b"d" * 8688)
    s.shutdown(socket.SHUT_WR)
    read_until(s)
    s.close()
    time.sleep(0.3)
    try:
        socket.create_connection((ip, 8082))
        raise SystemExit("port 8082 answered")
    except ConnectionRefusedError:
        pass
    time.sleep(0.3)
    s = socket.create_connection((ip, 8083))
    s.sendall(b"r" * 1000)
    time.sleep(0.1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.3)

{"server": server, "client": client}[sys.argv[1]](sys.argv[2])
EOF

ip netns exec "$NS_XTCP" tcpdump -i "$IF_XTCP" -s 0 -U -w "$tmp/capture.pcap" 'tcp or arp' 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 50); do grep -q "listening on" "$tmp/tcpdump.log" && break; sleep 0.1; done
ip netns exec "$NS_XTCP" python3 "$tmp/peers.py" server "$IP_XTCP" >"$tmp/server.log" &
server_pid=$!
for _ in $(seq 50); do grep -q ready "$tmp/server.log" && break; sleep 0.1; done
ip netns exec "$NS_KERNEL" python3 "$tmp/peers.py" client "$IP_XTCP"
wait "$server_pid"
server_pid=""
sleep 0.5
kill -INT "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=""
ip netns exec "$NS_MIDDLE" nft list table bridge xtcp_seeds | grep -q 'packets 1 ' ||
    { echo "error: the middle did not drop exactly one segment" >&2; exit 1; }
cp "$tmp/capture.pcap" "$out"
tcpdump -nr "$out" | cat
echo "wrote $out; now: XTCP_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions linux"
