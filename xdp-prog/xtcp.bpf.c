// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * xtcp's XDP steering program.
 *
 * Frames for one of the stack's IPv4 addresses and one of its TCP ports go to the AF_XDP socket of the rx queue they came
 * in on; everything else (ARP, ICMP, IPv6, other addresses and ports) passes to the kernel, which keeps ARP and
 * ICMP for the address it shares with xtcp. Modelled on libxdp's default program: parse with a bounds-checked
 * cursor, decide, redirect.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xtcp_shared.h"

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XTCP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} XTCP_MAP_XSKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xtcp_config);
} XTCP_MAP_CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XTCP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, struct xtcp_counters);
} XTCP_MAP_COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XTCP_MAX_FRAG_DATAGRAMS);
	__type(key, struct xtcp_frag_key);
	__type(value, __u8);
} XTCP_MAP_FRAGS SEC(".maps");

/* A cursor over the frame: each pull checks the header lies wholly before data_end. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline void *pull(struct cursor *c, __u32 len)
{
	void *start = c->pos;

	if (start + len > c->end)
		return NULL;
	c->pos = start + len;
	return start;
}

enum verdict { NOT_OURS, OURS, MALFORMED };

/* Whether daddr is one of the stack's addresses: a bounded scan, primary first, so one address costs one compare. */
static __always_inline int our_address(const struct xtcp_config *cfg, __u32 daddr)
{
	__u32 count = cfg->addr_count;

	for (__u32 i = 0; i < XTCP_MAX_ADDRS; i++) {
		if (i >= count)
			return 0;
		if (cfg->addrs_be[i] == daddr)
			return 1;
	}
	return 0;
}

static __always_inline enum verdict classify(struct cursor *c, const struct xtcp_config *cfg)
{
	struct ethhdr *eth = pull(c, sizeof(*eth));
	struct iphdr *ip;
	struct tcp_ports {
		__be16 source;
		__be16 dest;
	} *ports;
	struct xtcp_frag_key frag = {};
	__u32 first_fragment;
	__u32 ihl_bytes;
	__u32 daddr;
	__u16 port;
	__u8 one = 1;

	if (!eth)
		return MALFORMED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return NOT_OURS;

	ip = pull(c, sizeof(*ip));
	if (!ip)
		return MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return MALFORMED;
	if (ip->protocol != IPPROTO_TCP)
		return NOT_OURS;
	daddr = ip->daddr;
	/* Fragments: xtcp reassembles (src/nic/defrag.rs). The first fragment carries the ports and goes where they
	 * say; when it goes to xtcp its datagram is remembered, and the later fragments, which carry no ports, follow
	 * it. A later fragment of a datagram not remembered (the kernel's, or one whose first fragment has not come
	 * yet) goes to the kernel. A first fragment that goes to the kernel forgets the key: the 16-bit ID wraps, and
	 * an entry left from an earlier datagram of xtcp's would take this one's later fragments. */
	frag.saddr = ip->saddr;
	frag.daddr = daddr;
	frag.id = ip->id;
	if (ip->frag_off & bpf_htons(0x1fff)) {
		if (!bpf_map_lookup_elem(&XTCP_MAP_FRAGS, &frag))
			return NOT_OURS;
		return our_address(cfg, daddr) ? OURS : NOT_OURS;
	}
	first_fragment = ip->frag_off & bpf_htons(0x2000);
	/* Bounded on the value pulled by, right before the pull: the verifier takes no bound from the check above. */
	ihl_bytes = ip->ihl * 4;
	if (ihl_bytes < sizeof(*ip) || ihl_bytes > 60)
		return MALFORMED;
	if (!pull(c, ihl_bytes - sizeof(*ip)))
		return MALFORMED;

	/* The ports (the first four bytes of the header) are all a first fragment is sure to hold. */
	ports = pull(c, sizeof(*ports));
	if (!ports)
		return MALFORMED;
	/* Read before the next pull: the verifier keeps the bounds of the latest pointer only. */
	port = bpf_ntohs(ports->dest);
	if (!first_fragment && !pull(c, sizeof(struct tcphdr) - sizeof(*ports)))
		return MALFORMED;
	/* The address last: the scan's loop then follows every packet access, which keeps the verifier's bounds. */
	if (!((cfg->ports[port / XTCP_PORT_WORD_BITS] >> (port % XTCP_PORT_WORD_BITS)) & 1) ||
	    !our_address(cfg, daddr)) {
		if (first_fragment)
			bpf_map_delete_elem(&XTCP_MAP_FRAGS, &frag);
		return NOT_OURS;
	}
	if (first_fragment)
		bpf_map_update_elem(&XTCP_MAP_FRAGS, &frag, &one, BPF_ANY);
	return OURS;
}

SEC("xdp")
int XTCP_PROG_STEER(struct xdp_md *ctx)
{
	struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end };
	__u32 queue = ctx->rx_queue_index;
	__u32 key = XTCP_CONFIG_KEY;
	struct xtcp_counters *count;
	struct xtcp_config *cfg;
	int action;

	count = bpf_map_lookup_elem(&XTCP_MAP_COUNTERS, &queue);
	cfg = bpf_map_lookup_elem(&XTCP_MAP_CONFIG, &key);
	if (!count || !cfg)
		return XDP_PASS; /* a queue beyond XTCP_MAX_QUEUES */

	switch (classify(&c, cfg)) {
	case OURS:
		action = bpf_redirect_map(&XTCP_MAP_XSKS, queue, XDP_PASS);
		if (action == XDP_REDIRECT)
			count->redirected++;
		else
			count->no_socket++;
		return action;
	case MALFORMED:
		count->parse_errors++;
		return XDP_PASS;
	default:
		count->passed++;
		return XDP_PASS;
	}
}

char _license[] SEC("license") = "Dual MIT/GPL";
