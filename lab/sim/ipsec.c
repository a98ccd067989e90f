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
 * No data path yet: with packet offload the stack hands the device the packet in clear (the NIC
 * encrypts on mlx5); this device has no wire to carry it and drops it (counted in tx_dropped), so
 * nothing protected ever leaves in clear. Crypto offload behaves as upstream netdevsim (the stack
 * builds ESP; the device checks the SA and counts tx).
 */

#include <crypto/aead.h>
#include <linux/debugfs.h>
#include <net/ipv6.h>
#include <net/xfrm.h>

#include "netdevsim.h"

#define SIM_ACQ_HANDLE	BIT(30)	/* larval (acquire) state: accepted, holds no table entry */

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
static int sim_validate_state(struct xfrm_state *x, struct netlink_ext_ack *extack)
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
		break;
	case XFRM_DEV_OFFLOAD_PACKET:
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
	struct nsim_sa *sa;
	int ret;

	/* larval state of a packet-offload policy's acquire: no key, no extack (xfrm_state_find);
	 * mlx5e_xfrm_add_state skips validation and hardware for it; so do we
	 */
	if (xs->xso.flags & XFRM_DEV_OFFLOAD_FLAG_ACQ) {
		xs->xso.offload_handle = SIM_ACQ_HANDLE | NSIM_IPSEC_VALID;
		ipsec->sim_acq++;
		return 0;
	}
	ret = sim_validate_state(xs, extack);
	if (ret)
		return ret;
	ret = sim_find_empty_idx(ipsec);
	if (ret < 0) {
		NL_SET_ERR_MSG_MOD(extack, "No space for SA in the simulated device's table");
		return ret;
	}
	sa = &ipsec->sa[ret];
	memset(sa, 0, sizeof(*sa));
	sa->used = true;
	sa->crypt = true;
	sa->xs = xs;
	sa->rx = xs->xso.dir == XFRM_DEV_OFFLOAD_IN;
	memcpy(sa->key, xs->aead->alg_key, 16);
	memcpy(&sa->salt, xs->aead->alg_key + (xs->aead->alg_key_len - 32) / 8, 4);
	if (xs->props.family == AF_INET6)
		memcpy(sa->ipaddr, &xs->id.daddr.a6, 16);
	else
		memcpy(&sa->ipaddr[3], &xs->id.daddr.a4, 4);
	/* the xfrm stack does not like offload_handle == 0: flag it, as upstream netdevsim does */
	xs->xso.offload_handle = ret | NSIM_IPSEC_VALID;
	ipsec->count++;
	if (xs->xso.type == XFRM_DEV_OFFLOAD_PACKET)
		ipsec->sim_packet_sa++;
	return 0;
}

static void sim_del_state(struct xfrm_state *xs)
{
	struct netdevsim *ns = netdev_priv(xs->xso.real_dev);
	struct nsim_ipsec *ipsec = &ns->ipsec;
	unsigned long h = xs->xso.offload_handle;
	u32 idx;

	if (h & SIM_ACQ_HANDLE) {
		xs->xso.offload_handle = 0;
		ipsec->sim_acq--;
		return;
	}
	idx = h & ~NSIM_IPSEC_VALID;
	if (idx >= NSIM_IPSEC_MAX_SA_COUNT || !ipsec->sa[idx].used || ipsec->sa[idx].xs != xs) {
		netdev_err(ns->netdev, "delete of an unknown SA (handle 0x%lx)\n", h);
		return;
	}
	if (xs->xso.type == XFRM_DEV_OFFLOAD_PACKET)
		ipsec->sim_packet_sa--;
	memset(&ipsec->sa[idx], 0, sizeof(struct nsim_sa));
	ipsec->count--;
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
	if (sel->proto != IPPROTO_IP && sel->proto != IPPROTO_UDP && sel->proto != IPPROTO_TCP) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support upper protocol other than TCP/UDP");
		return -EINVAL;
	}
	if (x->priority == U32_MAX) {
		NL_SET_ERR_MSG_MOD(extack, "Device does not support requested policy priority");
		return -EINVAL;
	}
	x->xdo.offload_handle = NSIM_IPSEC_VALID;
	ns->ipsec.sim_policies++;
	return 0;
}

static void sim_del_policy(struct xfrm_policy *x)
{
	struct netdevsim *ns = netdev_priv(x->xdo.dev);

	if (x->xdo.offload_handle) {
		x->xdo.offload_handle = 0;
		ns->ipsec.sim_policies--;
	}
}

static void sim_free_policy(struct xfrm_policy *x)
{
}

static const struct xfrmdev_ops sim_xfrmdev_ops = {
	.xdo_dev_state_add		= sim_add_state,
	.xdo_dev_state_delete		= sim_del_state,
	.xdo_dev_offload_ok		= sim_offload_ok,
	.xdo_dev_state_advance_esn	= sim_advance_esn,
	.xdo_dev_policy_add		= sim_add_policy,
	.xdo_dev_policy_delete		= sim_del_policy,
	.xdo_dev_policy_free		= sim_free_policy,
};

/* transmit: crypto offload as upstream netdevsim (check the SA the stack attached, count it) */
bool nsim_ipsec_tx(struct netdevsim *ns, struct sk_buff *skb)
{
	struct sec_path *sp = skb_sec_path(skb);
	struct nsim_ipsec *ipsec = &ns->ipsec;
	struct xfrm_state *xs;
	u32 idx;

	if (!sp)
		return true;
	if (unlikely(!sp->len))
		return false;
	xs = xfrm_input_state(skb);
	if (unlikely(!xs))
		return false;
	idx = xs->xso.offload_handle & ~NSIM_IPSEC_VALID;
	if (unlikely(idx >= NSIM_IPSEC_MAX_SA_COUNT || !ipsec->sa[idx].used))
		return false;
	ipsec->tx++;
	return true;
}

void nsim_ipsec_init(struct netdevsim *ns)
{
	ns->netdev->xfrmdev_ops = &sim_xfrmdev_ops;

#define SIM_ESP_FEATURES	(NETIF_F_HW_ESP | NETIF_F_HW_ESP_TX_CSUM | NETIF_F_GSO_ESP)

	ns->netdev->features |= SIM_ESP_FEATURES;
	ns->netdev->hw_enc_features |= SIM_ESP_FEATURES;
	ns->ipsec.pfile = debugfs_create_file("ipsec", 0400, ns->nsim_dev_port->ddir, ns,
					      &sim_dbg_fops);
}

void nsim_ipsec_teardown(struct netdevsim *ns)
{
	struct nsim_ipsec *ipsec = &ns->ipsec;

	if (ipsec->count || ipsec->sim_policies)
		netdev_err(ns->netdev, "tearing down IPsec offload with %u SAs and %u policies left\n",
			   ipsec->count, ipsec->sim_policies);
	debugfs_remove_recursive(ipsec->pfile);
}
