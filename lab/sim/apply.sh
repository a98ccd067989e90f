#!/usr/bin/env bash
# Turn netdevsim's sources (drivers/net/netdevsim of the image kernel's linux-source) into the lab's
# simulated ConnectX: our xfrm offload (lab/sim/ipsec.c replaces ipsec.c) and the fields it keeps in
# struct nsim_ipsec. Called by lab/vm/customize.sh before the module is built; fails loudly when
# the sources do not look as expected (another kernel series), never builds a half-patched module.
#   lab/sim/apply.sh DIR        # DIR = .../drivers/net/netdevsim
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: apply.sh NETDEVSIM_SOURCE_DIR}
die() { echo "lab/sim/apply.sh: $*" >&2; exit 1; }
if [ ! -f "$dir/ipsec.c" ] || [ ! -f "$dir/netdevsim.h" ]; then die "$dir is not netdevsim's source directory"; fi
# struct nsim_ipsec ends with "u32 ok;": our counters go after it
grep -q '^struct nsim_ipsec {$' "$dir/netdevsim.h" || die "struct nsim_ipsec not found in netdevsim.h"
[ "$(grep -c '^	u32 ok;$' "$dir/netdevsim.h")" = 1 ] || die "netdevsim.h: expected one 'u32 ok;' line (struct nsim_ipsec)"
sed -i 's/^	u32 ok;$/	u32 ok;\n	u32 sim_policies;\n	u32 sim_packet_sa;\n	u32 sim_acq;\n	void *sim;/' "$dir/netdevsim.h"
grep -q 'void \*sim;' "$dir/netdevsim.h" || die "netdevsim.h: patch did not apply"
# the data path and ethtool entry points of lab/sim/ipsec.c, declared beside nsim_ipsec_tx (the
# module is built with CONFIG_XFRM_OFFLOAD=y, so the declaring branch is the one compiled)
[ "$(grep -c '^bool nsim_ipsec_tx(struct netdevsim \*ns, struct sk_buff \*skb);$' "$dir/netdevsim.h")" = 1 ] \
	|| die "netdevsim.h: expected one nsim_ipsec_tx declaration"
sed -i 's/^bool nsim_ipsec_tx(struct netdevsim \*ns, struct sk_buff \*skb);$/&\nbool nsim_sim_xmit(struct netdevsim *ns, struct sk_buff *skb);\nbool nsim_sim_wired(struct netdevsim *ns);\nint nsim_sim_sset_count(struct net_device *dev, int sset);\nvoid nsim_sim_get_strings(struct net_device *dev, u32 sset, u8 *data);\nvoid nsim_sim_get_stats(struct net_device *dev, struct ethtool_stats *stats, u64 *data);/' "$dir/netdevsim.h"
# transmit: the simulated wire takes the packet before netdevsim's own peer forwarding
[ "$(grep -c '^	peer_ns = rcu_dereference(ns->peer);$' "$dir/netdev.c")" = 1 ] || die "netdev.c: nsim_start_xmit not as expected"
sed -i 's/^	peer_ns = rcu_dereference(ns->peer);$/	if (nsim_sim_xmit(ns, skb)) {\n		rcu_read_unlock();\n		u64_stats_update_begin(\&ns->syncp);\n		ns->tx_packets++;\n		ns->tx_bytes += len;\n		u64_stats_update_end(\&ns->syncp);\n		return NETDEV_TX_OK;\n	}\n\n&/' "$dir/netdev.c"
grep -q 'if (nsim_sim_xmit(ns, skb))' "$dir/netdev.c" || die "netdev.c: patch did not apply"
# carrier: netdevsim has carrier only with a linked peer after a down/up; with our wire it has one
[ "$(grep -c '^	nsim_enable_napi(ns);$' "$dir/netdev.c")" = 1 ] || die "netdev.c: nsim_open not as expected"
sed -i 's/^	nsim_enable_napi(ns);$/&\n\n	if (nsim_sim_wired(ns))\n		netif_carrier_on(dev);/' "$dir/netdev.c"
grep -q 'nsim_sim_wired(ns)' "$dir/netdev.c" || die "netdev.c: carrier patch did not apply"
# ethtool -S with mlx5's ipsec counter names
[ "$(grep -c '^	.get_ts_info			= nsim_get_ts_info,$' "$dir/ethtool.c")" = 1 ] || die "ethtool.c: nsim_ethtool_ops not as expected"
sed -i 's/^	.get_ts_info			= nsim_get_ts_info,$/&\n	.get_sset_count			= nsim_sim_sset_count,\n	.get_strings			= nsim_sim_get_strings,\n	.get_ethtool_stats		= nsim_sim_get_stats,/' "$dir/ethtool.c"
grep -q 'nsim_sim_get_stats' "$dir/ethtool.c" || die "ethtool.c: patch did not apply"
install -m 0644 "$here/ipsec.c" "$dir/ipsec.c"
echo "lab/sim: netdevsim patched (xfrm offload as mlx5: crypto + packet, states + policies; packet data path; ethtool ipsec counters)"
