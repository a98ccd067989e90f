#!/usr/bin/env bash
# Turn netdevsim's sources (drivers/net/netdevsim of the image kernel's linux-source) into the lab's
# simulated ConnectX: our xfrm offload (lab/sim/ipsec.c replaces ipsec.c) and the fields it keeps in
# struct nsim_ipsec, and our devlink side (lab/sim/devlink.c, added as sim_devlink.c) with its hooks
# in dev.c. Called by lab/vm/customize.sh before the module is built; fails loudly when
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
sed -i 's/^	u32 ok;$/	u32 ok;\n	u32 sim_policies;\n	u32 sim_packet_sa;\n	u32 sim_acq;\n	void *sim;\n	void *sim_vf;/' "$dir/netdevsim.h"
grep -q 'void \*sim;' "$dir/netdevsim.h" || die "netdevsim.h: patch did not apply"
# the data path and ethtool entry points of lab/sim/ipsec.c, declared beside nsim_ipsec_tx (the
# module is built with CONFIG_XFRM_OFFLOAD=y, so the declaring branch is the one compiled)
[ "$(grep -c '^bool nsim_ipsec_tx(struct netdevsim \*ns, struct sk_buff \*skb);$' "$dir/netdevsim.h")" = 1 ] \
	|| die "netdevsim.h: expected one nsim_ipsec_tx declaration"
sed -i 's/^bool nsim_ipsec_tx(struct netdevsim \*ns, struct sk_buff \*skb);$/&\nbool nsim_sim_xmit(struct netdevsim *ns, struct sk_buff *skb);\nbool nsim_sim_wired(struct netdevsim *ns);\nint nsim_sim_sset_count(struct net_device *dev, int sset);\nvoid nsim_sim_get_strings(struct net_device *dev, u32 sset, u8 *data);\nvoid nsim_sim_get_stats(struct net_device *dev, struct ethtool_stats *stats, u64 *data);\nbool nsim_sim_is_rep(struct net_device *dev);/' "$dir/netdevsim.h"
# transmit: the simulated wire takes the packet before netdevsim's own peer forwarding
[ "$(grep -c '^	peer_ns = rcu_dereference(ns->peer);$' "$dir/netdev.c")" = 1 ] || die "netdev.c: nsim_start_xmit not as expected"
sed -i 's/^	peer_ns = rcu_dereference(ns->peer);$/	if (nsim_sim_xmit(ns, skb)) {\n		rcu_read_unlock();\n		u64_stats_update_begin(\&ns->syncp);\n		ns->tx_packets++;\n		ns->tx_bytes += len;\n		u64_stats_update_end(\&ns->syncp);\n		return NETDEV_TX_OK;\n	}\n\n&/' "$dir/netdev.c"
grep -q 'if (nsim_sim_xmit(ns, skb))' "$dir/netdev.c" || die "netdev.c: patch did not apply"
# a VF representor (netdevsim's VF-port netdev, nsim_vf_netdev_ops) for lab/sim/ipsec.c's VF functions
[ "$(grep -c '^static const struct net_device_ops nsim_vf_netdev_ops = {$' "$dir/netdev.c")" = 1 ] || die "netdev.c: nsim_vf_netdev_ops not as expected"
printf '\nbool nsim_sim_is_rep(struct net_device *dev)\n{\n\treturn dev->netdev_ops == &nsim_vf_netdev_ops;\n}\n' >> "$dir/netdev.c"
# carrier: netdevsim has carrier only with a linked peer after a down/up; with our wire it has one
[ "$(grep -c '^	nsim_enable_napi(ns);$' "$dir/netdev.c")" = 1 ] || die "netdev.c: nsim_open not as expected"
sed -i 's/^	nsim_enable_napi(ns);$/&\n\n	if (nsim_sim_wired(ns))\n		netif_carrier_on(dev);/' "$dir/netdev.c"
grep -q 'nsim_sim_wired(ns)' "$dir/netdev.c" || die "netdev.c: carrier patch did not apply"
# ethtool -S with mlx5's ipsec counter names
[ "$(grep -c '^	.get_ts_info			= nsim_get_ts_info,$' "$dir/ethtool.c")" = 1 ] || die "ethtool.c: nsim_ethtool_ops not as expected"
sed -i 's/^	.get_ts_info			= nsim_get_ts_info,$/&\n	.get_sset_count			= nsim_sim_sset_count,\n	.get_strings			= nsim_sim_get_strings,\n	.get_ethtool_stats		= nsim_sim_get_stats,/' "$dir/ethtool.c"
grep -q 'nsim_sim_get_stats' "$dir/ethtool.c" || die "ethtool.c: patch did not apply"
# ---- the devlink side (lab/sim/devlink.c, built as sim_devlink.o): our state hangs off struct nsim_dev
{ [ -f "$dir/dev.c" ] && [ -f "$dir/Makefile" ]; } || die "$dir: dev.c or Makefile missing"
[ "$(grep -c '^	u16 esw_mode;$' "$dir/netdevsim.h")" = 1 ] || die "netdevsim.h: expected one 'u16 esw_mode;' line (struct nsim_dev)"
sed -i 's/^	u16 esw_mode;$/&\n	void *sim;/' "$dir/netdevsim.h"
[ "$(grep -c '^unsigned int nsim_dev_get_vfs(struct nsim_dev \*nsim_dev);$' "$dir/netdevsim.h")" = 1 ] \
	|| die "netdevsim.h: expected one nsim_dev_get_vfs declaration"
sed -i 's/^unsigned int nsim_dev_get_vfs(struct nsim_dev \*nsim_dev);$/&\nint nsim_sim_devlink_init(struct nsim_dev *nsim_dev);\nvoid nsim_sim_devlink_debugfs(struct nsim_dev *nsim_dev);\nvoid nsim_sim_devlink_exit(struct nsim_dev *nsim_dev);\nint nsim_sim_eswitch_mode_check(struct nsim_dev *nsim_dev, u16 mode, struct netlink_ext_ack *extack);\nint nsim_sim_encap_mode_get(struct devlink *devlink, enum devlink_eswitch_encap_mode *encap);\nint nsim_sim_encap_mode_set(struct devlink *devlink, enum devlink_eswitch_encap_mode encap, struct netlink_ext_ack *extack);\nconst struct devlink_port_ops *nsim_sim_port_ops(struct nsim_dev_port *nsim_dev_port);\nbool nsim_sim_packet_caps(struct netdevsim *ns);\nint nsim_sim_ipsec_get(struct netdevsim *ns, bool tunnel_packet, struct netlink_ext_ack *extack);\nvoid nsim_sim_ipsec_put(struct netdevsim *ns);\nbool nsim_sim_vf_cap(struct netdevsim *rep, bool packet);/' "$dir/netdevsim.h"
grep -q 'nsim_sim_ipsec_put' "$dir/netdevsim.h" || die "netdevsim.h: devlink declarations did not apply"
# the object file
[ "$(grep -c '^	netdev.o dev.o ethtool.o fib.o bus.o health.o hwstats.o udp_tunnels.o$' "$dir/Makefile")" = 1 ] \
	|| die "Makefile: netdevsim-objs not as expected"
sed -i 's/^	netdev.o dev.o ethtool.o fib.o bus.o health.o hwstats.o udp_tunnels.o$/& sim_devlink.o/' "$dir/Makefile"
# probe: our param after netdevsim's (its error label unregisters ours first), our debugfs files
# after its debugfs directory exists; remove and probe's error path: ours before netdevsim's params
[ "$(grep -c '^	nsim_devlink_set_params_init_values(nsim_dev, devlink);$' "$dir/dev.c")" = 1 ] || die "dev.c: nsim_drv_probe not as expected (params)"
sed -i 's/^	nsim_devlink_set_params_init_values(nsim_dev, devlink);$/&\n\n	err = nsim_sim_devlink_init(nsim_dev);\n	if (err)\n		goto err_params_unregister;/' "$dir/dev.c"
[ "$(grep -c '^	err = nsim_dev_debugfs_init(nsim_dev);$' "$dir/dev.c")" = 1 ] || die "dev.c: nsim_drv_probe not as expected (debugfs)"
perl -0pi -e 's/(\n\terr = nsim_dev_debugfs_init\(nsim_dev\);\n\tif \(err\)\n\t\tgoto err_traps_exit;\n)/$1\tnsim_sim_devlink_debugfs(nsim_dev);\n/' "$dir/dev.c"
grep -q 'nsim_sim_devlink_debugfs(nsim_dev);' "$dir/dev.c" || die "dev.c: debugfs hook did not apply"
[ "$(grep -c '^	devl_params_unregister(devlink, nsim_devlink_params,$' "$dir/dev.c")" = 2 ] || die "dev.c: expected two unregisters of nsim_devlink_params"
sed -i 's/^	devl_params_unregister(devlink, nsim_devlink_params,$/	nsim_sim_devlink_exit(nsim_dev);\n&/' "$dir/dev.c"
# eswitch: encap mode ops; the mode change asks us first (once netdevsim knows the mode changes)
[ "$(grep -c '^	.eswitch_mode_get = nsim_devlink_eswitch_mode_get,$' "$dir/dev.c")" = 1 ] || die "dev.c: nsim_dev_devlink_ops not as expected"
sed -i 's/^	.eswitch_mode_get = nsim_devlink_eswitch_mode_get,$/&\n	.eswitch_encap_mode_get = nsim_sim_encap_mode_get,\n	.eswitch_encap_mode_set = nsim_sim_encap_mode_set,/' "$dir/dev.c"
perl -0pi -e 's/(\n\tif \(mode == nsim_dev->esw_mode\)\n\t\treturn 0;\n)/$1\tif (nsim_sim_eswitch_mode_check(nsim_dev, mode, extack))\n\t\treturn -EOPNOTSUPP;\n/' "$dir/dev.c"
[ "$(grep -c 'nsim_sim_eswitch_mode_check(nsim_dev, mode, extack)' "$dir/dev.c")" = 1 ] || die "dev.c: eswitch_mode_set hook did not apply"
# ports: VF ports registered with our port-function ops
perl -0pi -e 's/\terr = devl_port_register\(priv_to_devlink\(nsim_dev\), devlink_port,\n\t\t\t\t nsim_dev_port->port_index\);\n/\terr = devl_port_register_with_ops(priv_to_devlink(nsim_dev), devlink_port,\n\t\t\t\t\t  nsim_dev_port->port_index,\n\t\t\t\t\t  nsim_sim_port_ops(nsim_dev_port));\n/' "$dir/dev.c"
[ "$(grep -c 'nsim_sim_port_ops(nsim_dev_port)' "$dir/dev.c")" = 1 ] || die "dev.c: __nsim_dev_port_add not as expected (devl_port_register)"
install -m 0644 "$here/ipsec.c" "$dir/ipsec.c"
install -m 0644 "$here/devlink.c" "$dir/sim_devlink.c"
echo "lab/sim: netdevsim patched (xfrm offload as mlx5: crypto + packet, states + policies; packet data path; ethtool ipsec counters; devlink: flow_steering_mode, encap mode, VF ipsec_crypto/ipsec_packet, mlx5's eswitch rules)"
