/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Everything the steering program (xtcp.bpf.c) and user space (src/nic/afxdp) must agree on: limits, the layout
 * of the config and counter map values, and the map names. build.rs turns this header into Rust with bindgen, so
 * nothing here is typed a second time on the Rust side.
 */
#ifndef XTCP_SHARED_H
#define XTCP_SHARED_H

#include <linux/types.h>

/* Rx queues the XSKMAP and the counter map cover; frames from higher queues pass to the kernel. */
#define XTCP_MAX_QUEUES 64

/* TCP destination ports are a bitmap: 65536 bits in 64-bit words. */
#define XTCP_PORT_BITS 65536
#define XTCP_PORT_WORD_BITS 64
#define XTCP_PORT_WORDS (XTCP_PORT_BITS / XTCP_PORT_WORD_BITS)

/* IPv4 addresses steered: the stack's own and its aliases (xtcp's MAX_LOCAL_ADDRESSES is the same number). */
#define XTCP_MAX_ADDRS 64

/* IPv4 datagrams whose first fragment went to xtcp, remembered (least recently used first out) so that their
 * later fragments, which carry no ports, follow it. */
#define XTCP_MAX_FRAG_DATAGRAMS 1024

/* The one key of the config map. */
#define XTCP_CONFIG_KEY 0

/* Map names: the C identifiers of the maps and the names user space looks them up by. */
#define XTCP_MAP_XSKS xsks_map
#define XTCP_MAP_CONFIG xtcp_config_map
#define XTCP_MAP_COUNTERS xtcp_counters_map
#define XTCP_MAP_FRAGS xtcp_frags_map
/* The program's name (its C function). */
#define XTCP_PROG_STEER xtcp_steer

/* Runtime settings, written by user space before and after attach (an array map of one entry). */
struct xtcp_config {
	/* How many entries of addrs_be are in use (at most XTCP_MAX_ADDRS); 0 steers nothing. */
	__u32 addr_count;
	__u32 reserved;
	/* The stack's IPv4 addresses as they sit in the header (network byte order), its primary first. */
	__u32 addrs_be[XTCP_MAX_ADDRS];
	/* Bit (port % 64) of word (port / 64) set: TCP segments to that destination port go to the stack. */
	__u64 ports[XTCP_PORT_WORDS];
};

/* What the program did with the frames of one rx queue (a per-CPU array indexed by queue; user space sums). */
struct xtcp_counters {
	/* Handed to the queue's AF_XDP socket. */
	__u64 redirected;
	/* Not ours (another protocol, address or port): passed to the kernel. */
	__u64 passed;
	/* Too short or malformed Ethernet/IPv4/TCP headers: passed to the kernel, which drops or counts them. */
	__u64 parse_errors;
	/* Ours, but no socket sits in the XSKMAP at this queue: passed to the kernel. */
	__u64 no_socket;
};

/* A fragmented datagram, as its fragments all say it (network byte order): the key of the fragments map. */
struct xtcp_frag_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;
	__u16 reserved;
};

#endif /* XTCP_SHARED_H */
