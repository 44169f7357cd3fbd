#!/usr/bin/env bash
# Two network namespaces joined by a veth pair, for the AF_XDP tests and by hand:
#
#   scripts/netns.sh up NAME [--queues N [--xps-rxqs]] [--middle [--loss PERMILLE] [--dup PERMILLE]] [--aliases N]
#                                            creates them and prints shell assignments (eval-able)
#   scripts/netns.sh down NAME               removes them (quietly does nothing if they are gone)
#
# Namespace "xtcp-NAME-x" holds xtcp's side (IF_XTCP, IP_XTCP); "xtcp-NAME-k" holds the kernel peer's (IF_KERNEL,
# IP_KERNEL). Interface names and the 10.77.X.0/24 subnet are derived from NAME, and the addresses exist only inside
# the namespaces: test traffic never leaves them. The kernel side gets `tx off tso off gso off` so it sends whole
# frames with complete checksums (over veth it would otherwise send CHECKSUM_PARTIAL frames and GSO super-frames).
# --queues N gives both ends N rx and N tx queues. --xps-rxqs also sets XPS on the kernel's end so that a kernel
# socket answers on the queue xtcp sent from, for xtcp serving queues 1..N-1 (queue 0 left out): veth hands the
# sender's tx queue number Q to the receiver as "recorded rx queue" Q-1 (0 means none recorded), so tx-Q gets
# xps_rxqs = rx queue Q-1; and sockets with nothing recorded yet (a kernel client's SYN) pick by CPU, tx-Q getting
# xps_cpus = CPU (Q-1) mod CPUs. See docs/multicore.md.
#
# --middle puts a third namespace, "xtcp-NAME-m" (NS_MIDDLE), between them: two veth pairs joined by a bridge, so
# the wire between xtcp and the kernel runs through a namespace neither owns. --loss N drops N frames in 1000 and
# --dup N sends N in 1000 twice, in each direction, with nftables netdev ingress rules on the middle's two ports
# (`numgen random mod 1000 < N drop`, `dup to`): loss on the wire, which a kernel sender sees as loss, unlike a drop
# on its own egress (a local send failure it simply retries).
#
# --aliases N (at most 64) adds N more addresses to the kernel side's interface, 10.77.X.10 up to 10.77.X.(9+N),
# printed as ALIASES_KERNEL=a,b,c: source addresses for a load generator there (`xtcp load --source`) that wants
# more connections to one server than one address has ports. Needs root.
set -euo pipefail

usage() {
    echo "usage: $0 up NAME [--queues N [--xps-rxqs]] [--middle [--loss N] [--dup N]] [--aliases N] | down NAME" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
name=$2
shift 2
case "$name" in
    *[!A-Za-z0-9_-]* | "") echo "error: NAME must be letters, digits, '-' or '_'" >&2; exit 2 ;;
esac
[ ${#name} -le 40 ] || { echo "error: NAME is longer than 40 characters" >&2; exit 2; }

ns_x="xtcp-$name-x"
ns_k="xtcp-$name-k"
ns_m="xtcp-$name-m"
hash=$(printf '%s' "$name" | cksum | awk '{printf "%08x", $1}')
if_x="xx$hash"   # 10 characters: under the 15 of IFNAMSIZ
if_k="xk$hash"
mid_x="mx$hash"  # the middle's ends of the two pairs, and its bridge
mid_k="mk$hash"
bridge="mb$hash"
subnet=$((0x${hash:0:4} % 250 + 1))
ip_x="10.77.$subnet.1"
ip_k="10.77.$subnet.2"

down() {
    ip netns del "$ns_x" 2>/dev/null || true
    ip netns del "$ns_k" 2>/dev/null || true
    ip netns del "$ns_m" 2>/dev/null || true
}

up() {
    local queues=1 middle=0 loss=0 dup=0 xps_rxqs=0 aliases=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --queues) [ $# -ge 2 ] || usage; queues=$2; shift 2 ;;
            --xps-rxqs) xps_rxqs=1; shift ;;
            --middle) middle=1; shift ;;
            --loss) [ $# -ge 2 ] || usage; loss=$2; middle=1; shift 2 ;;
            --dup) [ $# -ge 2 ] || usage; dup=$2; middle=1; shift 2 ;;
            --aliases) [ $# -ge 2 ] || usage; aliases=$2; shift 2 ;;
            *) usage ;;
        esac
    done
    case "$queues" in *[!0-9]* | "" | 0) echo "error: --queues wants a positive number" >&2; exit 2 ;; esac
    case "$aliases" in *[!0-9]* | "") echo "error: --aliases wants a number from 0 to 64" >&2; exit 2 ;; esac
    [ "$aliases" -le 64 ] || { echo "error: --aliases wants a number from 0 to 64" >&2; exit 2; }
    for n in "$loss" "$dup"; do
        case "$n" in *[!0-9]* | "") echo "error: --loss and --dup want a number of frames in 1000" >&2; exit 2 ;; esac
        [ "$n" -le 1000 ] || { echo "error: --loss and --dup want a number of frames in 1000" >&2; exit 2; }
    done
    command -v ethtool >/dev/null || { echo "error: ethtool missing — apt-get install ethtool" >&2; exit 1; }
    if [ "$middle" -eq 1 ] && [ $((loss + dup)) -gt 0 ]; then
        command -v nft >/dev/null || { echo "error: nft missing — apt-get install nftables" >&2; exit 1; }
    fi
    down
    trap down ERR
    ip netns add "$ns_x"
    ip netns add "$ns_k"
    # Created inside the namespaces: the names never meet anyone else's in the root namespace.
    if [ "$middle" -eq 0 ]; then
        ip -n "$ns_x" link add "$if_x" numtxqueues "$queues" numrxqueues "$queues" type veth \
            peer name "$if_k" netns "$ns_k" numtxqueues "$queues" numrxqueues "$queues"
    else
        # The middle's ends get as many queues as xtcp's: native XDP on veth wants at least as many rx queues as
        # its peer has tx queues (ENOSPC otherwise).
        ip netns add "$ns_m"
        ip -n "$ns_x" link add "$if_x" numtxqueues "$queues" numrxqueues "$queues" type veth \
            peer name "$mid_x" netns "$ns_m" numtxqueues "$queues" numrxqueues "$queues"
        ip -n "$ns_k" link add "$if_k" numtxqueues "$queues" numrxqueues "$queues" type veth \
            peer name "$mid_k" netns "$ns_m" numtxqueues "$queues" numrxqueues "$queues"
        ip -n "$ns_m" link add "$bridge" type bridge
        for port in "$mid_x" "$mid_k"; do
            ip -n "$ns_m" link set "$port" master "$bridge"
            ip -n "$ns_m" link set "$port" up
        done
        ip -n "$ns_m" link set lo up
        ip -n "$ns_m" link set "$bridge" up
        if [ $((loss + dup)) -gt 0 ]; then
            impair_rules "$loss" "$dup" | ip netns exec "$ns_m" nft -f -
        fi
    fi
    ip -n "$ns_x" addr add "$ip_x/24" dev "$if_x"
    ip -n "$ns_k" addr add "$ip_k/24" dev "$if_k"
    local alias_list=""
    for i in $(seq 0 $((aliases - 1))); do
        ip -n "$ns_k" addr add "10.77.$subnet.$((10 + i))/24" dev "$if_k"
        alias_list="$alias_list${alias_list:+,}10.77.$subnet.$((10 + i))"
    done
    ip -n "$ns_x" link set lo up
    ip -n "$ns_k" link set lo up
    ip -n "$ns_x" link set "$if_x" up
    ip -n "$ns_k" link set "$if_k" up
    ip netns exec "$ns_k" ethtool -K "$if_k" tx off tso off gso off >/dev/null
    if [ "$xps_rxqs" -eq 1 ]; then
        [ "$middle" -eq 0 ] || { echo "error: --xps-rxqs is for the direct pair, not --middle" >&2; down; exit 2; }
        [ "$queues" -ge 2 ] || { echo "error: --xps-rxqs wants --queues 2 or more" >&2; down; exit 2; }
        ip netns exec "$ns_k" sh -c '
            cpus=$(nproc)
            for q in $(seq 1 $(($2 - 1))); do
                printf "%x" $((1 << (q - 1))) > "/sys/class/net/$1/queues/tx-$q/xps_rxqs"
                printf "%x" $((1 << ((q - 1) % cpus))) > "/sys/class/net/$1/queues/tx-$q/xps_cpus"
            done' xps "$if_k" "$queues"
    fi
    trap - ERR
    echo "NS_XTCP=$ns_x"
    echo "NS_KERNEL=$ns_k"
    echo "IF_XTCP=$if_x"
    echo "IF_KERNEL=$if_k"
    echo "IP_XTCP=$ip_x"
    echo "IP_KERNEL=$ip_k"
    echo "MAC_XTCP=$(ip netns exec "$ns_x" cat "/sys/class/net/$if_x/address")"
    echo "MAC_KERNEL=$(ip netns exec "$ns_k" cat "/sys/class/net/$if_k/address")"
    if [ "$middle" -eq 1 ]; then
        echo "NS_MIDDLE=$ns_m"
    fi
    if [ "$aliases" -gt 0 ]; then
        echo "ALIASES_KERNEL=$alias_list"
    fi
}

# The nftables ruleset of the middle: per direction, on the ingress of the port the frames come in on, drop LOSS
# in 1000 and copy DUP in 1000 straight out of the other port (the original still crosses the bridge).
impair_rules() {
    local loss=$1 dup=$2
    echo "table netdev xtcp_impair {"
    for dir in "$mid_x $mid_k" "$mid_k $mid_x"; do
        set -- $dir
        echo "  chain from_$1 {"
        echo "    type filter hook ingress device \"$1\" priority 0; policy accept;"
        [ "$loss" -gt 0 ] && echo "    numgen random mod 1000 < $loss counter drop"
        [ "$dup" -gt 0 ] && echo "    numgen random mod 1000 < $dup counter dup to \"$2\""
        echo "  }"
    done
    echo "}"
}

case "$cmd" in
    up) up "$@" ;;
    down) [ $# -eq 0 ] || usage; down ;;
    *) usage ;;
esac
