// SPDX-License-Identifier: GPL-2.0
/*
 * ipsec_offload.mlx5 lab: the xfrm offload part of netdevsim, rewritten to accept what an mlx5
 * ConnectX accepts and to refuse, with mlx5's extack messages, what it refuses (crypto and packet
 * offload of states and policies, dir in/out, AES-GCM-ICV16 with 128/256-bit keys, ESN, the
 * inbound replay windows 32/64/128/256, reqid required for packet offload, no offloaded forward
 * policy). It replaces drivers/net/netdevsim/ipsec.c at image build time (lab/vm/customize.sh);
 * the rule table with the mlx5 source of each rule is docs/lab-sim.md. Written for the lab of
 * this collection; the behaviour follows the kernel's mlx5 driver, the code is ours.
 *
 * Data path (packet offload, IPv4 transport mode), when a wire is attached: writing a netdev name
 * (the lab's link0) to debugfs ports/0/sim_lower makes it this device's wire. Transmit: a packet
 * that matches an out policy offloaded here is ESP-encapsulated and AES-GCM-encrypted with its
 * SA (the work mlx5 does in the NIC) and leaves on the wire with this device's MAC; anything else
 * leaves as it is. Receive (an rx_handler on the wire): frames for this device's MAC come to it;
 * ESP for an inbound SA offloaded here is decrypted, checked against the SA's replay window and
 * handed up with the SA in its secpath (CRYPTO_DONE/SUCCESS, as mlx5e_ipsec_offload_handle_rx_skb
 * does), so the stack accepts it under the offloaded in policy without a software lookup.
 * Per-SA packet/byte counters go to the SA's current lifetime (ip -s xfrm state) and to mlx5's
 * ethtool -S counter names (ipsec_rx_pkts ...). Without a wire, protected packets are still
 * encrypted (or dropped) before netdevsim's own peer forwarding, so nothing protected leaves in clear.
 * Crypto offload behaves as upstream netdevsim (the stack builds ESP; the device counts tx).
 */

#include <crypto/aead.h>
#include <linux/debugfs.h>
#include <linux/etherdevice.h>
#include <linux/inetdevice.h>
#include <linux/ip.h>
#include <linux/rtnetlink.h>
#include <linux/scatterlist.h>
#include <linux/unaligned.h>
#include <net/esp.h>
#include <net/ip.h>
#include <net/ipv6.h>
#include <net/xfrm.h>

#include "netdevsim.h"

#define SIM_ACQ_HANDLE	BIT(30)	/* larval (acquire) state: accepted, holds no table entry */
#define SIM_MAX_POL	64
#define SIM_ICV		16
#define SIM_IV		8

/* mlx5's ethtool -S ipsec_hw counter names (en_accel/ipsec_stats.c) */
static const char sim_stat_names[][ETH_GSTRING_LEN] = {
	"ipsec_rx_pkts", "ipsec_rx_bytes", "ipsec_rx_drop_pkts", "ipsec_rx_drop_bytes",
	"ipsec_tx_pkts", "ipsec_tx_bytes", "ipsec_tx_drop_pkts", "ipsec_tx_drop_bytes",
};

enum { ST_RX_PKTS, ST_RX_BYTES, ST_RX_DROP_PKTS, ST_RX_DROP_BYTES,
       ST_TX_PKTS, ST_TX_BYTES, ST_TX_DROP_PKTS, ST_TX_DROP_BYTES, ST_N };

struct sim_sa {			/* the SA entry (xso.offload_handle), as mlx5's sa_entry */
	int idx;			/* its slot in nsim_ipsec.sa[] and sim_ctx.sa[] */
	struct xfrm_state *xs;
	struct crypto_aead *tfm;	/* rfc4106(gcm(aes)), synchronous */
	u64 oseq;			/* last sequence number sent (64 bits, ESN or not) */
	u64 top;			/* highest sequence number received */
	u64 bitmap;			/* received window below top (bit n: top - n) */
};

struct sim_ctx {
	struct netdevsim *ns;
	struct net_device *lower;	/* the wire (debugfs sim_lower), rx_handler registered */
	netdevice_tracker lower_tracker;
	spinlock_t lock;		/* SA table, policies, counters against the data path */
	struct sim_sa *sa[NSIM_IPSEC_MAX_SA_COUNT];
	struct xfrm_policy *pol[SIM_MAX_POL];	/* offloaded policies (dir out used on transmit) */
	u64 stats[ST_N];
	struct dentry *lower_file;
	/* a VF function (debugfs sim_rep): the representor this netdev is the VF of, by ifindex in
	 * init_net (no reference held: a representor that goes away is simply not found); the
	 * representor's nsim_ipsec.sim_vf points back here
	 */
	int rep_ifindex;
	struct dentry *rep_file;
};

static struct sim_ctx *sim_ctx(struct netdevsim *ns)
{
	return ns->ipsec.sim;
}

/* the representor of a VF function, if it is still there and still ours (RCU or RTNL held) */
static struct netdevsim *sim_rep(struct sim_ctx *c)
{
	int ifindex = READ_ONCE(c->rep_ifindex);
	struct net_device *dev;
	struct netdevsim *rep;

	if (!ifindex)
		return NULL;
	dev = dev_get_by_index_rcu(&init_net, ifindex);
	if (!dev || !nsim_sim_is_rep(dev))
		return NULL;
	rep = netdev_priv(dev);
	return READ_ONCE(rep->ipsec.sim_vf) == c ? rep : NULL;
}

/* A VF function's IPsec capabilities are its VF's port functions on the PF (mlx5: the VF's HCA
 * caps, written by mlx5_devlink_port_fn_ipsec_*_set while the VF was unbound): packet offload
 * needs ipsec_packet, crypto offload ipsec_crypto or ipsec_packet. A netdev that is no VF
 * function has the device's own capabilities.
 */
static bool sim_vf_caps(struct sim_ctx *c, bool packet)
{
	struct netdevsim *rep;
	bool ok;

	if (!c || !READ_ONCE(c->rep_ifindex))
		return true;
	rcu_read_lock();
	rep = sim_rep(c);
	ok = rep && nsim_sim_vf_cap(rep, packet);
	rcu_read_unlock();
	return ok;
}

static const char *sim_type_name(u8 type)
{
	switch (type) {
	case XFRM_DEV_OFFLOAD_CRYPTO:
		return "crypto";
	case XFRM_DEV_OFFLOAD_PACKET:
		return "packet";
	default:
		return "unspec";
	}
}

static ssize_t sim_dbg_read(struct file *filp, char __user *buffer, size_t count, loff_t *ppos)
{
	struct netdevsim *ns = filp->private_data;
	struct nsim_ipsec *ipsec = &ns->ipsec;
	size_t bufsize = (NSIM_IPSEC_MAX_SA_COUNT + 2) * 160;
	char *buf, *p;
	int len, i;

	buf = kzalloc(bufsize, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	p = buf;
	/* first line as upstream netdevsim prints it (lab/device checks it), then our counts */
	p += scnprintf(p, bufsize - (p - buf), "SA count=%u tx=%u policies=%u packet_sa=%u acq=%u\n",
		       ipsec->count, ipsec->tx, ipsec->sim_policies, ipsec->sim_packet_sa,
		       ipsec->sim_acq);
	for (i = 0; i < NSIM_IPSEC_MAX_SA_COUNT; i++) {
		struct nsim_sa *sap = &ipsec->sa[i];
		struct xfrm_state *xs = sap->xs;

		if (!sap->used)
			continue;
		p += scnprintf(p, bufsize - (p - buf),
			       "sa[%i] %cx spi=0x%08x reqid=%u type=%s mode=%s esn=%d keybits=%u\n",
			       i, sap->rx ? 'r' : 't', be32_to_cpu(xs->id.spi), xs->props.reqid,
			       sim_type_name(xs->xso.type),
			       xs->props.mode == XFRM_MODE_TUNNEL ? "tunnel" : "transport",
			       !!(xs->props.flags & XFRM_STATE_ESN), xs->aead->alg_key_len - 32);
	}
	len = simple_read_from_buffer(buffer, count, ppos, buf, p - buf);
	kfree(buf);
	return len;
}

static const struct file_operations sim_dbg_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = sim_dbg_read,
};

static int sim_find_empty_idx(struct nsim_ipsec *ipsec)
{
	u32 i;

	for (i = 0; i < NSIM_IPSEC_MAX_SA_COUNT; i++)
		if (!ipsec->sa[i].used)
			return i;
	return -ENOSPC;
}

/* mlx5e_xfrm_validate_state (drivers/net/ethernet/mellanox/mlx5/core/en_accel/ipsec.c), with the
 * capabilities of a ConnectX-7: crypto, packet, ESN, ESP in UDP and tunnel mode offload.
 */
static int sim_validate_state(struct netdevsim *ns, struct xfrm_state *x,
			      struct netlink_ext_ack *extack)
{
	if (x->props.aalgo != SADB_AALG_NONE) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload authenticated xfrm states");
		return -EINVAL;
	}
	if (x->props.ealgo != SADB_X_EALG_AES_GCM_ICV16) {
		NL_SET_ERR_MSG_MOD(extack, "Only AES-GCM-ICV16 xfrm state may be offloaded");
		return -EINVAL;
	}
	if (x->props.calgo != SADB_X_CALG_NONE) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload compressed xfrm states");
		return -EINVAL;
	}
	if (x->props.family != AF_INET && x->props.family != AF_INET6) {
		NL_SET_ERR_MSG_MOD(extack, "Only IPv4/6 xfrm states may be offloaded");
		return -EINVAL;
	}
	if (x->id.proto != IPPROTO_ESP) {
		NL_SET_ERR_MSG_MOD(extack, "Only ESP xfrm state may be offloaded");
		return -EINVAL;
	}
	if (x->encap) {
		if (x->encap->encap_type != UDP_ENCAP_ESPINUDP) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation other than UDP is not supported");
			return -EINVAL;
		}
		if (x->xso.type != XFRM_DEV_OFFLOAD_PACKET) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation is supported in packet offload mode only");
			return -EINVAL;
		}
		if (x->props.mode != XFRM_MODE_TRANSPORT) {
			NL_SET_ERR_MSG_MOD(extack, "Encapsulation is supported in transport mode only");
			return -EINVAL;
		}
	}
	if (!x->aead) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states without aead");
		return -EINVAL;
	}
	if (x->aead->alg_icv_len != 128) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with AEAD ICV length other than 128bit");
		return -EINVAL;
	}
	if (x->aead->alg_key_len != 128 + 32 && x->aead->alg_key_len != 256 + 32) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with AEAD key length other than 128/256 bit");
		return -EINVAL;
	}
	if (x->tfcpad) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with tfc padding");
		return -EINVAL;
	}
	if (!x->geniv) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states without geniv");
		return -EINVAL;
	}
	if (strcmp(x->geniv, "seqiv")) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload xfrm states with geniv other than seqiv");
		return -EINVAL;
	}
	if (x->sel.proto != IPPROTO_IP && x->sel.proto != IPPROTO_UDP &&
	    x->sel.proto != IPPROTO_TCP) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support upper protocol other than TCP/UDP");
		return -EINVAL;
	}
	if (x->props.mode != XFRM_MODE_TRANSPORT && x->props.mode != XFRM_MODE_TUNNEL) {
		NL_SET_ERR_MSG_MOD(extack, "Only transport and tunnel xfrm states may be offloaded");
		return -EINVAL;
	}
	switch (x->xso.type) {
	case XFRM_DEV_OFFLOAD_CRYPTO:
		/* a VF without IPsec capabilities: mlx5 gives its netdev no xfrmdev_ops, so the xfrm
		 * core keeps a crypto state in software; -EOPNOTSUPP makes the core do the same
		 */
		if (!sim_vf_caps(sim_ctx(ns), false))
			return -EOPNOTSUPP;
		break;
	case XFRM_DEV_OFFLOAD_PACKET:
		/* mlx5_ipsec_device_caps: no packet offload with smfs in switchdev mode, nor on a VF
		 * whose port function ipsec_packet was off when it was bound
		 */
		if (!nsim_sim_packet_caps(ns) || !sim_vf_caps(sim_ctx(ns), true)) {
			NL_SET_ERR_MSG_MOD(extack, "Packet offload is not supported");
			return -EINVAL;
		}
		if (x->replay_esn && x->xso.dir == XFRM_DEV_OFFLOAD_IN &&
		    x->replay_esn->replay_window != 32 && x->replay_esn->replay_window != 64 &&
		    x->replay_esn->replay_window != 128 && x->replay_esn->replay_window != 256) {
			NL_SET_ERR_MSG_MOD(extack, "Unsupported replay window size");
			return -EINVAL;
		}
		if (!x->props.reqid) {
			NL_SET_ERR_MSG_MOD(extack, "Cannot offload without reqid");
			return -EINVAL;
		}
		if (x->lft.soft_byte_limit >= x->lft.hard_byte_limit &&
		    x->lft.hard_byte_limit != XFRM_INF) {
			NL_SET_ERR_MSG_MOD(extack, "Hard byte limit must be greater than soft one");
			return -EINVAL;
		}
		if (!x->lft.soft_byte_limit || !x->lft.hard_byte_limit) {
			NL_SET_ERR_MSG_MOD(extack, "Soft/hard byte limits can't be 0");
			return -EINVAL;
		}
		if (x->lft.soft_packet_limit >= x->lft.hard_packet_limit &&
		    x->lft.hard_packet_limit != XFRM_INF) {
			NL_SET_ERR_MSG_MOD(extack, "Hard packet limit must be greater than soft one");
			return -EINVAL;
		}
		if (!x->lft.soft_packet_limit || !x->lft.hard_packet_limit) {
			NL_SET_ERR_MSG_MOD(extack, "Soft/hard packet limits can't be 0");
			return -EINVAL;
		}
		break;
	default:
		NL_SET_ERR_MSG_MOD(extack, "Unsupported xfrm offload type");
		return -EINVAL;
	}
	return 0;
}

static int sim_add_state(struct xfrm_state *xs, struct netlink_ext_ack *extack)
{
	struct netdevsim *ns = netdev_priv(xs->xso.real_dev);
	struct nsim_ipsec *ipsec = &ns->ipsec;
	struct sim_ctx *c = sim_ctx(ns);
	struct sim_sa *e;
	struct nsim_sa *sa;
	int ret, idx;

	/* larval state of a packet-offload policy's acquire: no key, no extack (xfrm_state_find);
	 * mlx5e_xfrm_add_state skips validation and hardware for it; so do we
	 */
	if (xs->xso.flags & XFRM_DEV_OFFLOAD_FLAG_ACQ) {
		xs->xso.offload_handle = SIM_ACQ_HANDLE;
		ipsec->sim_acq++;
		return 0;
	}
	ret = sim_validate_state(ns, xs, extack);
	if (ret)
		return ret;
	if (!c)
		return -ENOMEM;
	/* the device's side (lab/sim/devlink.c): a VF with IPsec enabled blocks the PF (-EBUSY), the
	 * eswitch and encap modes are held, tunnel mode needs tables made while encap allowed it
	 */
	ret = nsim_sim_ipsec_get(ns, xs->props.mode == XFRM_MODE_TUNNEL &&
				 xs->xso.type == XFRM_DEV_OFFLOAD_PACKET, extack);
	if (ret)
		return ret;
	e = kzalloc(sizeof(*e), GFP_KERNEL);
	if (!e) {
		nsim_sim_ipsec_put(ns);
		return -ENOMEM;
	}
	e->xs = xs;
	if (xs->xso.type == XFRM_DEV_OFFLOAD_PACKET) {
		/* the device's own cipher for the data path; synchronous (mask CRYPTO_ALG_ASYNC) */
		e->tfm = crypto_alloc_aead("rfc4106(gcm(aes))", 0, CRYPTO_ALG_ASYNC);
		if (IS_ERR(e->tfm) ||
		    crypto_aead_setkey(e->tfm, xs->aead->alg_key, (xs->aead->alg_key_len + 7) / 8) ||
		    crypto_aead_setauthsize(e->tfm, SIM_ICV)) {
			if (!IS_ERR(e->tfm))
				crypto_free_aead(e->tfm);
			kfree(e);
			nsim_sim_ipsec_put(ns);
			NL_SET_ERR_MSG_MOD(extack, "Device failed to offload this state");
			return -EINVAL;
		}
	}
	spin_lock_bh(&c->lock);
	idx = sim_find_empty_idx(ipsec);
	if (idx < 0) {
		spin_unlock_bh(&c->lock);
		if (e->tfm)
			crypto_free_aead(e->tfm);
		kfree(e);
		nsim_sim_ipsec_put(ns);
		NL_SET_ERR_MSG_MOD(extack, "No space for SA in the simulated device's table");
		return idx;
	}
	e->idx = idx;
	sa = &ipsec->sa[idx];
	memset(sa, 0, sizeof(*sa));
	sa->used = true;
	sa->crypt = true;
	sa->xs = xs;
	sa->rx = xs->xso.dir == XFRM_DEV_OFFLOAD_IN;
	if (xs->props.family == AF_INET6)
		memcpy(sa->ipaddr, &xs->id.daddr.a6, 16);
	else
		memcpy(&sa->ipaddr[3], &xs->id.daddr.a4, 4);
	c->sa[idx] = e;
	ipsec->count++;
	if (xs->xso.type == XFRM_DEV_OFFLOAD_PACKET)
		ipsec->sim_packet_sa++;
	spin_unlock_bh(&c->lock);
	/* as mlx5 does: the handle is the driver's SA entry */
	xs->xso.offload_handle = (unsigned long)e;
	return 0;
}

/* called with xs->lock held (xfrm_state_delete): take the SA out of the table, keep the entry */
static void sim_del_state(struct xfrm_state *xs)
{
	struct netdevsim *ns = netdev_priv(xs->xso.real_dev);
	struct nsim_ipsec *ipsec = &ns->ipsec;
	struct sim_ctx *c = sim_ctx(ns);
	unsigned long h = xs->xso.offload_handle;
	struct sim_sa *e;

	if (!h)
		return;
	if (h == SIM_ACQ_HANDLE) {
		xs->xso.offload_handle = 0;
		ipsec->sim_acq--;
		return;
	}
	e = (struct sim_sa *)h;
	spin_lock_bh(&c->lock);
	if (c->sa[e->idx] == e) {
		c->sa[e->idx] = NULL;
		if (xs->xso.type == XFRM_DEV_OFFLOAD_PACKET)
			ipsec->sim_packet_sa--;
		memset(&ipsec->sa[e->idx], 0, sizeof(struct nsim_sa));
		ipsec->count--;
		nsim_sim_ipsec_put(ns);
	}
	spin_unlock_bh(&c->lock);
}

/* process context (xfrm_state_gc / flush): free the entry and its cipher */
static void sim_free_state(struct xfrm_state *xs)
{
	unsigned long h = xs->xso.offload_handle;
	struct sim_sa *e;

	if (!h || h == SIM_ACQ_HANDLE)
		return;
	sim_del_state(xs);
	e = (struct sim_sa *)h;
	if (e->tfm)
		crypto_free_aead(e->tfm);
	kfree(e);
	xs->xso.offload_handle = 0;
}

static bool sim_offload_ok(struct sk_buff *skb, struct xfrm_state *xs)
{
	struct netdevsim *ns = netdev_priv(xs->xso.real_dev);

	ns->ipsec.ok++;
	return true;
}

/* ESN: the device follows the stack's high sequence bits (mlx5 reprograms them); nothing to do */
static void sim_advance_esn(struct xfrm_state *xs)
{
}

/* mlx5e_xfrm_validate_policy, with a ConnectX-7's capabilities (packet offload, priorities) */
static int sim_add_policy(struct xfrm_policy *x, struct netlink_ext_ack *extack)
{
	struct netdevsim *ns = netdev_priv(x->xdo.dev);
	struct xfrm_selector *sel = &x->selector;
	struct sim_ctx *c;
	int i, ret;

	if (x->type != XFRM_POLICY_TYPE_MAIN) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload non-main policy types");
		return -EINVAL;
	}
	if (x->xfrm_nr > 1) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload more than one template");
		return -EINVAL;
	}
	if (x->xdo.dir != XFRM_DEV_OFFLOAD_IN && x->xdo.dir != XFRM_DEV_OFFLOAD_OUT) {
		NL_SET_ERR_MSG_MOD(extack, "Cannot offload forward policy");
		return -EINVAL;
	}
	if (!x->xfrm_vec[0].reqid && sel->proto == IPPROTO_IP &&
	    ipv6_addr_any((const struct in6_addr *)sel->saddr.a6) &&
	    ipv6_addr_any((const struct in6_addr *)sel->daddr.a6)) {
		NL_SET_ERR_MSG_MOD(extack, "Unsupported policy with reqid 0 without at least one of upper protocol or ip addr(s) different than 0");
		return -EINVAL;
	}
	if (x->xdo.type != XFRM_DEV_OFFLOAD_PACKET) {
		NL_SET_ERR_MSG_MOD(extack, "Unsupported xfrm offload type");
		return -EINVAL;
	}
	if (!sim_vf_caps(sim_ctx(ns), true)) {
		NL_SET_ERR_MSG_MOD(extack, "Packet offload is not supported");
		return -EINVAL;
	}
	if (sel->proto != IPPROTO_IP && sel->proto != IPPROTO_UDP && sel->proto != IPPROTO_TCP) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support upper protocol other than TCP/UDP");
		return -EINVAL;
	}
	if (x->priority) {
		/* MLX5_IPSEC_CAP_PRIO: gone with packet offload (smfs in switchdev mode) */
		if (!nsim_sim_packet_caps(ns)) {
			NL_SET_ERR_MSG_MOD(extack, "Device does not support policy priority");
			return -EINVAL;
		}
		if (x->priority == U32_MAX) {
			NL_SET_ERR_MSG_MOD(extack, "Device does not support requested policy priority");
			return -EINVAL;
		}
	}
	c = sim_ctx(ns);
	if (!c)
		return -ENOMEM;
	ret = nsim_sim_ipsec_get(ns, false, extack);
	if (ret)
		return ret;
	spin_lock_bh(&c->lock);
	for (i = 0; i < SIM_MAX_POL && c->pol[i]; i++)
		;
	if (i == SIM_MAX_POL) {
		spin_unlock_bh(&c->lock);
		nsim_sim_ipsec_put(ns);
		NL_SET_ERR_MSG_MOD(extack, "Device failed to offload this policy");
		return -ENOSPC;
	}
	c->pol[i] = x;
	ns->ipsec.sim_policies++;
	spin_unlock_bh(&c->lock);
	x->xdo.offload_handle = NSIM_IPSEC_VALID | i;
	return 0;
}

static void sim_del_policy(struct xfrm_policy *x)
{
	struct netdevsim *ns = netdev_priv(x->xdo.dev);
	struct sim_ctx *c = sim_ctx(ns);
	unsigned long i = x->xdo.offload_handle & ~NSIM_IPSEC_VALID;

	if (!x->xdo.offload_handle || !c)
		return;
	spin_lock_bh(&c->lock);
	if (i < SIM_MAX_POL && c->pol[i] == x) {
		c->pol[i] = NULL;
		ns->ipsec.sim_policies--;
		nsim_sim_ipsec_put(ns);
	}
	spin_unlock_bh(&c->lock);
	x->xdo.offload_handle = 0;
}

static void sim_free_policy(struct xfrm_policy *x)
{
}

static const struct xfrmdev_ops sim_xfrmdev_ops = {
	.xdo_dev_state_add		= sim_add_state,
	.xdo_dev_state_delete		= sim_del_state,
	.xdo_dev_state_free		= sim_free_state,
	.xdo_dev_offload_ok		= sim_offload_ok,
	.xdo_dev_state_advance_esn	= sim_advance_esn,
	.xdo_dev_policy_add		= sim_add_policy,
	.xdo_dev_policy_delete		= sim_del_policy,
	.xdo_dev_policy_free		= sim_free_policy,
};


/* ---- data path (packet offload, IPv4 transport mode) ---------------------------------------- */

static bool sim_addr_match(__be32 a, __be32 b, u8 plen)
{
	return !plen || !((a ^ b) & inet_make_mask(plen));
}

/* does the IPv4 packet match the selector of an out policy offloaded here? (c->lock held) */
static struct xfrm_policy *sim_match_out(struct sim_ctx *c, const struct iphdr *iph,
					 const __be16 *ports)
{
	int i;

	for (i = 0; i < SIM_MAX_POL; i++) {
		struct xfrm_policy *x = c->pol[i];
		const struct xfrm_selector *sel;

		if (!x || x->xdo.dir != XFRM_DEV_OFFLOAD_OUT)
			continue;
		sel = &x->selector;
		if (sel->family != AF_INET ||
		    !sim_addr_match(iph->saddr, sel->saddr.a4, sel->prefixlen_s) ||
		    !sim_addr_match(iph->daddr, sel->daddr.a4, sel->prefixlen_d))
			continue;
		if (sel->proto && sel->proto != iph->protocol)
			continue;
		if (sel->proto && (sel->sport_mask || sel->dport_mask)) {
			if (!ports)
				continue;
			if ((ports[0] ^ sel->sport) & sel->sport_mask ||
			    (ports[1] ^ sel->dport) & sel->dport_mask)
				continue;
		}
		return x;
	}
	return NULL;
}

static struct sim_sa *sim_find_sa(struct sim_ctx *c, u8 dir, u32 reqid, __be32 spi, __be32 daddr)
{
	int i;

	for (i = 0; i < NSIM_IPSEC_MAX_SA_COUNT; i++) {
		struct sim_sa *e = c->sa[i];

		if (!e || !e->tfm || e->xs->xso.dir != dir || e->xs->props.family != AF_INET ||
		    e->xs->props.mode != XFRM_MODE_TRANSPORT || e->xs->id.daddr.a4 != daddr)
			continue;
		if (dir == XFRM_DEV_OFFLOAD_OUT ? e->xs->props.reqid == reqid : e->xs->id.spi == spi)
			return e;
	}
	return NULL;
}

/* AES-GCM over [SPI][seq hi, with ESN][seq lo][IV][text][ICV] in buf (rfc4106: the IV ends the
 * associated data); the wire carries SPI, seq lo, IV, ciphertext and ICV
 */
static int sim_crypt(struct sim_sa *e, u8 *buf, unsigned int assoclen, unsigned int len, bool enc)
{
	struct aead_request *req;
	struct scatterlist sg;
	int err;

	req = aead_request_alloc(e->tfm, GFP_ATOMIC);
	if (!req)
		return -ENOMEM;
	sg_init_one(&sg, buf, assoclen + len + (enc ? SIM_ICV : 0));
	aead_request_set_callback(req, 0, NULL, NULL);
	aead_request_set_crypt(req, &sg, &sg, len, buf + assoclen - SIM_IV);
	aead_request_set_ad(req, assoclen);
	err = enc ? crypto_aead_encrypt(req) : crypto_aead_decrypt(req);
	aead_request_free(req);
	return err;
}

static unsigned int sim_assoc(struct sim_sa *e, u8 *buf, u64 seq)
{
	__be32 *a = (__be32 *)buf;
	unsigned int n = 0;

	a[n++] = e->xs->id.spi;
	if (e->xs->props.flags & XFRM_STATE_ESN)
		a[n++] = htonl(seq >> 32);
	a[n++] = htonl((u32)seq);
	return n * 4 + SIM_IV;
}

/* encapsulate + encrypt in place; 1 done, <0 drop */
static int sim_encrypt(struct sim_ctx *c, struct sim_sa *e, struct sk_buff *skb)
{
	unsigned int nh = skb_network_offset(skb), ihl, plen, padlen, clen, assoclen, i;
	struct iphdr *iph;
	u8 *buf, *p;
	u64 seq;
	int err;

	iph = (struct iphdr *)(skb->data + nh);
	ihl = iph->ihl * 4;
	plen = ntohs(iph->tot_len) - ihl;
	padlen = (4 - ((plen + 2) & 3)) & 3;
	clen = plen + padlen + 2;
	if (skb_headroom(skb) < 16 || skb_tailroom(skb) < padlen + 2 + SIM_ICV || skb_cloned(skb)) {
		if (pskb_expand_head(skb, 16, padlen + 2 + SIM_ICV, GFP_ATOMIC))
			return -ENOMEM;
		iph = (struct iphdr *)(skb->data + nh);
	}
	seq = ++e->oseq;
	if (!(e->xs->props.flags & XFRM_STATE_ESN) && seq > U32_MAX)
		return -EOVERFLOW;	/* the sequence space is used up: the SA must be replaced */
	buf = kmalloc(12 + SIM_IV + clen + SIM_ICV, GFP_ATOMIC);
	if (!buf)
		return -ENOMEM;
	assoclen = sim_assoc(e, buf, seq);
	put_unaligned_be64(seq, buf + assoclen - SIM_IV);	/* IV: the sequence number, unique per SA */
	p = buf + assoclen;
	memcpy(p, skb->data + nh + ihl, plen);
	for (i = 0; i < padlen; i++)
		p[plen + i] = i + 1;
	p[plen + padlen] = padlen;
	p[plen + padlen + 1] = iph->protocol;
	err = sim_crypt(e, buf, assoclen, clen, true);
	if (err) {
		kfree(buf);
		return err;
	}
	skb_push(skb, 16);
	memmove(skb->data, skb->data + 16, nh + ihl);
	skb_reset_mac_header(skb);
	skb_set_network_header(skb, nh);
	skb_put(skb, padlen + 2 + SIM_ICV);
	iph = (struct iphdr *)(skb->data + nh);
	p = skb->data + nh + ihl;
	*(__be32 *)p = e->xs->id.spi;
	*(__be32 *)(p + 4) = htonl((u32)seq);
	memcpy(p + 8, buf + assoclen - SIM_IV, SIM_IV);
	memcpy(p + 16, buf + assoclen, clen + SIM_ICV);
	kfree(buf);
	iph->protocol = IPPROTO_ESP;
	iph->tot_len = htons(ihl + 16 + clen + SIM_ICV);
	ip_send_check(iph);
	skb->ip_summed = CHECKSUM_NONE;
	e->xs->curlft.packets++;
	e->xs->curlft.bytes += plen;
	c->stats[ST_TX_PKTS]++;
	c->stats[ST_TX_BYTES] += plen;
	return 1;
}

/* 0: not protected here (leaves as it is), 1: encrypted, <0: drop */
static int sim_tx_esp(struct sim_ctx *c, struct sk_buff *skb)
{
	unsigned int nh = skb_network_offset(skb), ihl;
	const __be16 *ports = NULL;
	struct xfrm_policy *pol;
	struct iphdr *iph;
	struct sim_sa *e;
	int ret;

	if (!pskb_may_pull(skb, nh + sizeof(*iph)))
		return 0;
	iph = (struct iphdr *)(skb->data + nh);
	ihl = iph->ihl * 4;
	if (ihl < sizeof(*iph))
		return 0;
	if (!ip_is_fragment(iph) && (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) &&
	    pskb_may_pull(skb, nh + ihl + 4)) {
		iph = (struct iphdr *)(skb->data + nh);
		ports = (const __be16 *)(skb->data + nh + ihl);
	}
	spin_lock_bh(&c->lock);
	pol = sim_match_out(c, iph, ports);
	spin_unlock_bh(&c->lock);
	if (!pol)
		return 0;
	/* protected: one packet per skb, linear, exactly the IP datagram (else the NIC drops it) */
	if (skb_is_gso(skb) || skb_linearize(skb))
		return -EINVAL;
	iph = (struct iphdr *)(skb->data + nh);
	if (skb->len < nh + ntohs(iph->tot_len))
		return -EINVAL;
	if (skb->len > nh + ntohs(iph->tot_len))
		__skb_trim(skb, nh + ntohs(iph->tot_len));
	spin_lock_bh(&c->lock);
	pol = sim_match_out(c, iph, ports ? (const __be16 *)(skb->data + nh + ihl) : NULL);
	if (!pol) {
		spin_unlock_bh(&c->lock);
		return 0;
	}
	e = sim_find_sa(c, XFRM_DEV_OFFLOAD_OUT, pol->xfrm_vec[0].reqid, 0, iph->daddr);
	if (!e) {		/* the NIC drops it (mlx5: ipsec_tx_drop_no_state) */
		ret = -ENOENT;
	} else {
		if (skb->ip_summed == CHECKSUM_PARTIAL && skb_checksum_help(skb))
			ret = -EINVAL;
		else
			ret = sim_encrypt(c, e, skb);
	}
	if (ret < 0) {
		c->stats[ST_TX_DROP_PKTS]++;
		c->stats[ST_TX_DROP_BYTES] += skb->len;
	}
	spin_unlock_bh(&c->lock);
	return ret;
}

/* nsim_open: a device with a wire has carrier (upstream: only with a linked peer) */
bool nsim_sim_wired(struct netdevsim *ns)
{
	struct sim_ctx *c = sim_ctx(ns);

	return c && (c->lower || c->rep_ifindex);
}

/* VF function -> its representor: what the VF sends arrives on the representor (eswitch slow
 * path; the representor's tc rules take it from there). RCU held (nsim_start_xmit).
 */
static void sim_vf_to_rep(struct sim_ctx *c, struct sk_buff *skb)
{
	struct netdevsim *rep = sim_rep(c);

	if (!rep) {
		kfree_skb(skb);
		return;
	}
	if (__dev_forward_skb(rep->netdev, skb) == NET_RX_SUCCESS)
		netif_rx(skb);
}

static int sim_rx_esp(struct sim_ctx *c, struct sk_buff *skb);

/* representor -> its VF function: what is sent on the representor (tc mirred, the stack)
 * arrives on the VF's netdev, ESP for the VF's inbound SAs decrypted by the device first
 */
static void sim_rep_to_vf(struct sim_ctx *c, struct sk_buff *skb)
{
	struct net_device *dev = c->ns->netdev;

	if (__dev_forward_skb(dev, skb) != NET_RX_SUCCESS)
		return;		/* freed */
	skb_reset_network_header(skb);
	if (skb->protocol == htons(ETH_P_IP) && skb->pkt_type == PACKET_HOST &&
	    (skb_unclone(skb, GFP_ATOMIC) || sim_rx_esp(c, skb) < 0)) {
		kfree_skb(skb);
		return;
	}
	netif_rx(skb);
}

/* called by nsim_start_xmit: true when the packet was taken (sent on the wire or dropped) */
bool nsim_sim_xmit(struct netdevsim *ns, struct sk_buff *skb)
{
	struct sim_ctx *c = sim_ctx(ns);
	struct net_device *lower;

	if (!c) {
		/* a VF representor (netdevsim gives it no IPsec and no queues): to its VF function */
		struct sim_ctx *vf = READ_ONCE(ns->ipsec.sim_vf);

		if (!vf)
			return false;
		sim_rep_to_vf(vf, skb);
		return true;
	}
	/* with or without a wire: what an out policy offloaded here protects leaves encrypted or not
	 * at all (without a wire, netdevsim forwards to its linked peer, if any, or drops)
	 */
	if (skb->protocol == htons(ETH_P_IP) && sim_tx_esp(c, skb) < 0) {
		kfree_skb(skb);
		return true;
	}
	if (READ_ONCE(c->rep_ifindex)) {
		sim_vf_to_rep(c, skb);
		return true;
	}
	lower = READ_ONCE(c->lower);
	if (!lower)
		return false;
	skb->dev = lower;
	dev_queue_xmit(skb);
	return true;
}

/* 0: not ESP of an SA offloaded here (the stack gets it as it is), 1: decrypted, <0: drop */
static int sim_rx_esp(struct sim_ctx *c, struct sk_buff *skb)
{
	unsigned int ihl, clen, assoclen, window, plen, padlen;
	struct xfrm_offload *xo;
	struct xfrm_state *x;
	struct sec_path *sp;
	struct iphdr *iph;
	struct sim_sa *e;
	u32 seq_lo, tl;
	u8 *buf, nexthdr;
	u64 seq;
	__be32 spi;
	int err;

	if (!pskb_may_pull(skb, sizeof(*iph)))
		return 0;
	iph = ip_hdr(skb);
	if (iph->protocol != IPPROTO_ESP || ip_is_fragment(iph))
		return 0;
	ihl = iph->ihl * 4;
	if (skb_linearize(skb))
		return -ENOMEM;
	iph = ip_hdr(skb);
	if (skb->len < ihl + 16 + SIM_ICV + 2 || ntohs(iph->tot_len) != skb->len)
		return 0;
	spi = *(__be32 *)(skb->data + ihl);
	seq_lo = ntohl(*(__be32 *)(skb->data + ihl + 4));
	spin_lock_bh(&c->lock);
	e = sim_find_sa(c, XFRM_DEV_OFFLOAD_IN, 0, spi, iph->daddr);
	if (!e) {
		spin_unlock_bh(&c->lock);
		return 0;
	}
	x = e->xs;
	window = x->replay_esn ? x->replay_esn->replay_window : x->props.replay_window;
	window = min(window, 64u);
	seq = seq_lo;
	if (x->props.flags & XFRM_STATE_ESN) {
		u32 th = e->top >> 32;

		tl = (u32)e->top;
		if (seq_lo < tl && tl - seq_lo > 0x80000000u)
			th++;
		seq = ((u64)th << 32) | seq_lo;
	}
	err = 0;
	if (!seq)
		err = -EINVAL;
	else if (seq <= e->top && (e->top - seq >= window || (e->bitmap >> (e->top - seq)) & 1))
		err = -EALREADY;	/* replayed, or older than the window */
	clen = skb->len - ihl - 16 - SIM_ICV;
	buf = err ? NULL : kmalloc(12 + SIM_IV + clen + SIM_ICV, GFP_ATOMIC);
	if (!err && !buf)
		err = -ENOMEM;
	if (!err) {
		assoclen = sim_assoc(e, buf, seq);
		memcpy(buf + assoclen - SIM_IV, skb->data + ihl + 8, SIM_IV);
		memcpy(buf + assoclen, skb->data + ihl + 16, clen + SIM_ICV);
		err = sim_crypt(e, buf, assoclen, clen + SIM_ICV, false);
	}
	if (!err) {
		padlen = buf[assoclen + clen - 2];
		nexthdr = buf[assoclen + clen - 1];
		if (padlen + 2 > clen)
			err = -EINVAL;
	}
	if (err) {
		c->stats[ST_RX_DROP_PKTS]++;
		c->stats[ST_RX_DROP_BYTES] += skb->len;
		spin_unlock_bh(&c->lock);
		kfree(buf);
		return err;
	}
	if (seq > e->top) {
		e->bitmap = seq - e->top >= 64 ? 0 : e->bitmap << (seq - e->top);
		e->top = seq;
	}
	e->bitmap |= 1ULL << (e->top - seq);
	plen = clen - 2 - padlen;
	xfrm_state_hold(x);
	x->curlft.packets++;
	x->curlft.bytes += plen;
	c->stats[ST_RX_PKTS]++;
	c->stats[ST_RX_BYTES] += plen;
	spin_unlock_bh(&c->lock);

	memcpy(skb->data + ihl, buf + assoclen, plen);
	kfree(buf);
	skb_trim(skb, ihl + plen);
	iph = ip_hdr(skb);
	iph->protocol = nexthdr;
	iph->tot_len = htons(ihl + plen);
	ip_send_check(iph);
	skb_set_transport_header(skb, ihl);
	skb->ip_summed = CHECKSUM_NONE;
	/* as mlx5e_ipsec_offload_handle_rx_skb: the SA in the secpath, decrypted by the device */
	sp = secpath_set(skb);
	if (!sp) {
		xfrm_state_put(x);
		return -ENOMEM;
	}
	sp->xvec[sp->len++] = x;
	sp->olen++;
	xo = xfrm_offload(skb);
	xo->flags = CRYPTO_DONE;
	xo->status = CRYPTO_SUCCESS;
	xo->proto = nexthdr;
	return 1;
}

static rx_handler_result_t sim_rx_handler(struct sk_buff **pskb)
{
	struct sk_buff *skb = *pskb;
	struct sim_ctx *c = rcu_dereference(skb->dev->rx_handler_data);
	struct net_device *dev = c->ns->netdev;
	const struct ethhdr *eth = eth_hdr(skb);
	bool mine;

	if (skb->pkt_type == PACKET_LOOPBACK)
		return RX_HANDLER_PASS;
	if (is_multicast_ether_addr(eth->h_dest)) {
		/* broadcast / multicast (ARP, ND): a copy for the device, the wire keeps its own */
		struct sk_buff *n = (dev->flags & IFF_UP) ? skb_clone(skb, GFP_ATOMIC) : NULL;

		if (n) {
			n->dev = dev;
			netif_rx(n);
		}
		return RX_HANDLER_PASS;
	}
	mine = ether_addr_equal(eth->h_dest, dev->dev_addr);
	/* in switchdev mode the uplink also takes unicast for others (the VF functions behind the
	 * representors, reached through the PF's tc rules), except what is the wire's own
	 */
	if (!mine && (!nsim_esw_mode_is_switchdev(c->ns->nsim_dev) ||
		      ether_addr_equal(eth->h_dest, skb->dev->dev_addr)))
		return RX_HANDLER_PASS;
	skb = skb_share_check(skb, GFP_ATOMIC);
	*pskb = skb;
	if (!skb)
		return RX_HANDLER_CONSUMED;
	if (!(dev->flags & IFF_UP) ||
	    (mine && skb->protocol == htons(ETH_P_IP) && sim_rx_esp(c, skb) < 0)) {
		kfree_skb(skb);
		return RX_HANDLER_CONSUMED;
	}
	skb->dev = dev;
	skb->pkt_type = mine ? PACKET_HOST : PACKET_OTHERHOST;
	return RX_HANDLER_ANOTHER;
}

static void sim_lower_detach(struct sim_ctx *c)
{
	ASSERT_RTNL();
	if (!c->lower)
		return;
	netdev_rx_handler_unregister(c->lower);
	netdev_put(c->lower, &c->lower_tracker);
	WRITE_ONCE(c->lower, NULL);
}

static ssize_t sim_lower_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	struct sim_ctx *c = f->private_data;
	struct net_device *dev = c->ns->netdev, *lower;
	char buf[IFNAMSIZ + 1] = {}, *name;
	int err = 0;

	if (len > IFNAMSIZ || copy_from_user(buf, ubuf, len))
		return -EINVAL;
	name = strim(buf);
	rtnl_lock();
	if (c->rep_ifindex) {
		rtnl_unlock();
		return -EBUSY;		/* a VF function has no wire of its own */
	}
	sim_lower_detach(c);
	if (name[0]) {
		lower = __dev_get_by_name(dev_net(dev), name);
		if (!lower || lower == dev || lower->type != ARPHRD_ETHER) {
			err = -ENODEV;
		} else {
			err = netdev_rx_handler_register(lower, sim_rx_handler, c);
			if (!err) {
				netdev_hold(lower, &c->lower_tracker, GFP_KERNEL);
				WRITE_ONCE(c->lower, lower);
				/* one packet per skb on the data path: no segmentation offload */
				dev->hw_features &= ~NETIF_F_GSO_MASK;
				dev->wanted_features &= ~NETIF_F_GSO_MASK;
				dev->features &= ~NETIF_F_GSO_MASK;
				netdev_update_features(dev);
				/* the wire's GRO would hand ESP to esp4_gro_receive (software
				 * decryption) before our rx_handler sees it: the NIC must see it
				 */
				lower->wanted_features &= ~NETIF_F_GRO;
				netdev_update_features(lower);
				if (netif_running(dev))
					netif_carrier_on(dev);
			}
		}
	}
	rtnl_unlock();
	return err ? err : len;
}

static ssize_t sim_lower_read(struct file *f, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct sim_ctx *c = f->private_data;
	char buf[IFNAMSIZ + 2];
	int n;

	rtnl_lock();
	n = scnprintf(buf, sizeof(buf), "%s\n", c->lower ? c->lower->name : "");
	rtnl_unlock();
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static const struct file_operations sim_lower_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = sim_lower_read,
	.write = sim_lower_write,
};

/* RTNL held: the VF function leaves its representor (its VF counts as unbound again) */
static void sim_rep_detach(struct sim_ctx *c)
{
	struct netdevsim *rep;

	ASSERT_RTNL();
	if (!c->rep_ifindex)
		return;
	rep = sim_rep(c);
	if (rep)
		WRITE_ONCE(rep->ipsec.sim_vf, NULL);
	WRITE_ONCE(c->rep_ifindex, 0);
	if (!c->lower)
		netif_carrier_off(c->ns->netdev);
}

/* debugfs ports/N/sim_rep: write the name of a netdevsim VF representor (initial netns) to make
 * this port's netdev that VF's function - its netdev as the VF's driver would make it once bound
 * (lab/lib.sh sim_vf_bind) - or an empty line to undo that. While attached, the VF counts as
 * bound (its port functions cannot change), the netdev's IPsec capabilities are the VF's port
 * functions, and its packets go to and come from the representor.
 */
static ssize_t sim_rep_write(struct file *f, const char __user *ubuf, size_t len, loff_t *ppos)
{
	struct sim_ctx *c = f->private_data;
	struct net_device *dev = c->ns->netdev, *rdev;
	char buf[IFNAMSIZ + 1] = {}, *name;
	struct netdevsim *rep;
	int err = 0;

	if (len > IFNAMSIZ || copy_from_user(buf, ubuf, len))
		return -EINVAL;
	name = strim(buf);
	rtnl_lock();
	/* the VF's capabilities come with the binding: not while IPsec objects are offloaded */
	if (c->ns->ipsec.count || c->ns->ipsec.sim_policies) {
		err = -EBUSY;
		goto unlock;
	}
	if (!name[0]) {
		sim_rep_detach(c);
		goto unlock;
	}
	if (c->rep_ifindex || c->lower) {
		err = -EBUSY;
		goto unlock;
	}
	rdev = __dev_get_by_name(&init_net, name);
	if (!rdev || !nsim_sim_is_rep(rdev)) {
		err = -ENODEV;
		goto unlock;
	}
	rep = netdev_priv(rdev);
	if (!nsim_dev_port_is_vf(rep->nsim_dev_port) || rep->ipsec.sim_vf) {
		err = -EINVAL;
		goto unlock;
	}
	WRITE_ONCE(rep->ipsec.sim_vf, c);
	WRITE_ONCE(c->rep_ifindex, rdev->ifindex);
	dev->hw_features &= ~NETIF_F_GSO_MASK;
	dev->wanted_features &= ~NETIF_F_GSO_MASK;
	dev->features &= ~NETIF_F_GSO_MASK;
	netdev_update_features(dev);
	if (netif_running(dev))
		netif_carrier_on(dev);
unlock:
	rtnl_unlock();
	return err ? err : len;
}

static ssize_t sim_rep_read(struct file *f, char __user *ubuf, size_t len, loff_t *ppos)
{
	struct sim_ctx *c = f->private_data;
	struct netdevsim *rep;
	char buf[IFNAMSIZ + 2];
	int n;

	rtnl_lock();
	rep = sim_rep(c);
	n = scnprintf(buf, sizeof(buf), "%s\n", rep ? rep->netdev->name : "");
	rtnl_unlock();
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static const struct file_operations sim_rep_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = sim_rep_read,
	.write = sim_rep_write,
};

/* ethtool -S: mlx5's ipsec_hw counters */
int nsim_sim_sset_count(struct net_device *dev, int sset)
{
	struct netdevsim *ns = netdev_priv(dev);

	return sset == ETH_SS_STATS && sim_ctx(ns) ? ST_N : -EOPNOTSUPP;
}

void nsim_sim_get_strings(struct net_device *dev, u32 sset, u8 *data)
{
	if (sset == ETH_SS_STATS)
		memcpy(data, sim_stat_names, sizeof(sim_stat_names));
}

void nsim_sim_get_stats(struct net_device *dev, struct ethtool_stats *stats, u64 *data)
{
	struct sim_ctx *c = sim_ctx(netdev_priv(dev));

	memset(data, 0, ST_N * sizeof(u64));
	if (!c)
		return;
	spin_lock_bh(&c->lock);
	memcpy(data, c->stats, sizeof(c->stats));
	spin_unlock_bh(&c->lock);
}

/* crypto offload transmit, as upstream netdevsim: check the SA the stack attached, count it */
bool nsim_ipsec_tx(struct netdevsim *ns, struct sk_buff *skb)
{
	struct sec_path *sp = skb_sec_path(skb);
	struct sim_ctx *c = sim_ctx(ns);
	struct xfrm_state *xs;
	struct sim_sa *e;

	if (!sp)
		return true;
	if (unlikely(!sp->len))
		return false;
	xs = xfrm_input_state(skb);
	if (unlikely(!xs || !c || !xs->xso.offload_handle || xs->xso.offload_handle == SIM_ACQ_HANDLE))
		return false;
	e = (struct sim_sa *)xs->xso.offload_handle;
	if (unlikely(READ_ONCE(c->sa[e->idx]) != e))
		return false;
	ns->ipsec.tx++;
	return true;
}

void nsim_ipsec_init(struct netdevsim *ns)
{
	struct sim_ctx *c;

	ns->netdev->xfrmdev_ops = &sim_xfrmdev_ops;

#define SIM_ESP_FEATURES	(NETIF_F_HW_ESP | NETIF_F_HW_ESP_TX_CSUM | NETIF_F_GSO_ESP)

	ns->netdev->features |= SIM_ESP_FEATURES;
	ns->netdev->hw_enc_features |= SIM_ESP_FEATURES;
	ns->ipsec.pfile = debugfs_create_file("ipsec", 0400, ns->nsim_dev_port->ddir, ns,
					      &sim_dbg_fops);
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return;		/* offload add then fails with -ENOMEM */
	c->ns = ns;
	spin_lock_init(&c->lock);
	c->lower_file = debugfs_create_file("sim_lower", 0600, ns->nsim_dev_port->ddir, c,
					    &sim_lower_fops);
	c->rep_file = debugfs_create_file("sim_rep", 0600, ns->nsim_dev_port->ddir, c,
					  &sim_rep_fops);
	ns->ipsec.sim = c;
}

/* netdevsim calls this under RTNL, after unregister_netdevice (the core flushed our SAs) */
void nsim_ipsec_teardown(struct netdevsim *ns)
{
	struct nsim_ipsec *ipsec = &ns->ipsec;
	struct sim_ctx *c = sim_ctx(ns);

	if (ipsec->count || ipsec->sim_policies)
		netdev_err(ns->netdev, "tearing down IPsec offload with %u SAs and %u policies left\n",
			   ipsec->count, ipsec->sim_policies);
	debugfs_remove_recursive(ipsec->pfile);
	if (c) {
		debugfs_remove(c->lower_file);
		debugfs_remove(c->rep_file);
		sim_lower_detach(c);
		if (c->rep_ifindex) {
			sim_rep_detach(c);
			synchronize_net();	/* the representor's transmit may still hold c */
		}
		ipsec->sim = NULL;
		kfree(c);
	}
}
