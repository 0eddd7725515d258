// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Redirect IPv4 UDP packets addressed to the repair port into the AF_XDP socket bound to
// the packet's rx queue (XSKMAP indexed by rx_queue_index); everything else goes on to
// the kernel stack. User space sets the ports in the array `repair_port` (host byte
// order): entry 0 is the first port, entry 1 the number of ports (one per shard; the NIC's
// flow steering sends each shard's port to that shard's queue). A count of 0 matches
// nothing.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32);
} repair_port SEC(".maps");

SEC("xdp")
int repair_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    if (ip->frag_off & bpf_htons(0x3fff)) /* fragments go to the kernel */
        return XDP_PASS;
    struct udphdr *udp = (void *)(ip + 1);
    if ((void *)(udp + 1) > data_end)
        return XDP_PASS;
    __u32 k0 = 0, k1 = 1;
    __u32 *first = bpf_map_lookup_elem(&repair_port, &k0);
    __u32 *count = bpf_map_lookup_elem(&repair_port, &k1);
    if (!first || !count)
        return XDP_PASS;
    __u32 dport = bpf_ntohs(udp->dest);
    if (dport < *first || dport - *first >= *count)
        return XDP_PASS;
    return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
