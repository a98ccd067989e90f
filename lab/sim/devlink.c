// SPDX-License-Identifier: GPL-2.0
/*
 * ipsec_offload.mlx5 lab: the devlink side of the simulated ConnectX, added to netdevsim at image
 * build time (lab/sim/apply.sh copies this file in as sim_devlink.c and hooks it into dev.c). It
 * gives the netdevsim device what mlx5 has and upstream netdevsim lacks, with the rules and extack
 * messages of the mlx5 driver of the lab's kernel (6.12); the rule table with the mlx5 source of
 * each rule is docs/lab-sim.md. Written for the lab of this collection; the code is ours.
 *
 *  - devlink param flow_steering_mode (driver-specific, string, runtime): "smfs" (the default of a
 *    device with software steering) or "dmfs"; smfs is refused while the eswitch is in switchdev
 *    mode, anything else is a bad parameter (fs_core.c mlx5_fs_mode_validate).
 *  - eswitch encap mode get/set: none or basic (the default), stored as is in legacy mode; in
 *    switchdev mode refused while the IPsec tables hold it (eswitch_offloads.c
 *    mlx5_devlink_eswitch_encap_mode_set, mlx5_eswitch_block_encap).
 *  - eswitch mode change refused while IPsec SAs/policies are offloaded to the device
 *    (mlx5_devlink_eswitch_mode_set, num_block_mode).
 *  - port function ipsec_crypto / ipsec_packet on VF ports (mlx5_devlink_port_fn_ipsec_*_{get,set}):
 *    kept per VF number; a change is refused (-EBUSY, no message) while the PF has offloaded IPsec
 *    objects and no VF has a capability yet, and refused with mlx5's message while the VF is bound
 *    to its driver. netdevsim VFs have no driver: the debugfs file sim_vf_bound of the device holds
 *    the VF numbers the sim treats as bound (write "0 2", or "" for none; default none); a VF
 *    whose representor has a VF function attached (lab/sim/ipsec.c, debugfs sim_rep) is bound too,
 *    and that function's IPsec capabilities are the VF's port functions (nsim_sim_vf_cap).
 *  - the PF's own IPsec offload refused (-EBUSY, no message) while a VF has a capability enabled
 *    (eswitch.c mlx5_eswitch_block_ipsec), packet offload needs dmfs or legacy mode, and a
 *    tunnel-mode packet SA needs the IPsec tables made while encap allowed it
 *    (en_accel/ipsec_offload.c mlx5_ipsec_device_caps, en_accel/ipsec.c mlx5e_xfrm_add_state);
 *    lab/sim/ipsec.c asks through nsim_sim_ipsec_get/put and nsim_sim_packet_caps.
 */

#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <net/devlink.h>

#include "netdevsim.h"

#define SIM_MAX_VFS		64
#define SIM_PARAM_ID_FSM	(DEVLINK_PARAM_GENERIC_ID_MAX + 16)	/* above netdevsim's own ids */

struct sim_dl {
	struct nsim_dev *nsim_dev;
	spinlock_t lock;		/* offloads, tunnel_ok, the VF arrays (xfrm paths take it too) */
	bool smfs;			/* flow_steering_mode: smfs, else dmfs */
	u8 encap;			/* enum devlink_eswitch_encap_mode: NONE or BASIC */
	unsigned int offloads;		/* SAs (not larval) + policies offloaded to the device's netdevs */
	bool tunnel_ok;			/* the IPsec tables allow tunnel mode (hold an encap block) */
	bool crypto[SIM_MAX_VFS];
	bool packet[SIM_MAX_VFS];
	bool bound[SIM_MAX_VFS];
};

static struct sim_dl *sim_dl(struct nsim_dev *nsim_dev)
{
	return nsim_dev->sim;
}

static unsigned int sim_num_vfs(struct nsim_dev *nsim_dev)
{
	return min_t(unsigned int, READ_ONCE(nsim_dev->nsim_bus_dev->num_vfs), SIM_MAX_VFS);
}

/* mlx5's enabled_ipsec_vf_count: existing VFs with ipsec_crypto or ipsec_packet (lock held) */
static unsigned int sim_ipsec_vfs(struct sim_dl *d)
{
	unsigned int i, n = 0, vfs = sim_num_vfs(d->nsim_dev);

	for (i = 0; i < vfs; i++)
		if (d->crypto[i] || d->packet[i])
			n++;
	return n;
}

/* ---- flow_steering_mode (fs_core.c mlx5_fs_mode_validate / _set / _get) ------------------- */

static int sim_fsm_validate(struct devlink *devlink, u32 id, union devlink_param_value val,
			    struct netlink_ext_ack *extack)
{
	struct nsim_dev *nsim_dev = devlink_priv(devlink);

	if (!strcmp(val.vstr, "dmfs"))
		return 0;
	if (!strcmp(val.vstr, "smfs")) {
		/* the simulated device has software steering; only the eswitch mode can refuse it */
		if (nsim_esw_mode_is_switchdev(nsim_dev)) {
			NL_SET_ERR_MSG_MOD(extack,
					   "Software managed steering is not supported when eswitch offloads enabled.");
			return -EOPNOTSUPP;
		}
		return 0;
	}
	NL_SET_ERR_MSG_MOD(extack, "Bad parameter: supported values are [\"dmfs\", \"smfs\"]");
	return -EINVAL;
}

static int sim_fsm_set(struct devlink *devlink, u32 id, struct devlink_param_gset_ctx *ctx,
		       struct netlink_ext_ack *extack)
{
	struct sim_dl *d = sim_dl(devlink_priv(devlink));

	spin_lock_bh(&d->lock);
	d->smfs = !strcmp(ctx->val.vstr, "smfs");
	spin_unlock_bh(&d->lock);
	return 0;
}

static int sim_fsm_get(struct devlink *devlink, u32 id, struct devlink_param_gset_ctx *ctx)
{
	struct sim_dl *d = sim_dl(devlink_priv(devlink));

	strscpy(ctx->val.vstr, d->smfs ? "smfs" : "dmfs", sizeof(ctx->val.vstr));
	return 0;
}

static const struct devlink_param sim_params[] = {
	DEVLINK_PARAM_DRIVER(SIM_PARAM_ID_FSM, "flow_steering_mode", DEVLINK_PARAM_TYPE_STRING,
			     BIT(DEVLINK_PARAM_CMODE_RUNTIME), sim_fsm_get, sim_fsm_set, sim_fsm_validate),
};

/* ---- eswitch mode and encap mode (eswitch_offloads.c) ------------------------------------- */

/* called by netdevsim's eswitch_mode_set once it knows the mode changes (mlx5 checks
 * num_block_mode after "cur_mlx5_mode == mlx5_mode")
 */
int nsim_sim_eswitch_mode_check(struct nsim_dev *nsim_dev, u16 mode, struct netlink_ext_ack *extack)
{
	struct sim_dl *d = sim_dl(nsim_dev);
	unsigned int busy;

	if (!d)
		return 0;
	spin_lock_bh(&d->lock);
	busy = d->offloads;
	spin_unlock_bh(&d->lock);
	if (busy) {
		NL_SET_ERR_MSG_MOD(extack, "Can't change eswitch mode when IPsec SA and/or policies are configured");
		return -EOPNOTSUPP;
	}
	return 0;
}

int nsim_sim_encap_mode_get(struct devlink *devlink, enum devlink_eswitch_encap_mode *encap)
{
	struct sim_dl *d = sim_dl(devlink_priv(devlink));

	*encap = d->encap;
	return 0;
}

int nsim_sim_encap_mode_set(struct devlink *devlink, enum devlink_eswitch_encap_mode encap,
			    struct netlink_ext_ack *extack)
{
	struct nsim_dev *nsim_dev = devlink_priv(devlink);
	struct sim_dl *d = sim_dl(nsim_dev);
	int err = 0;

	/* the device has FDB reformat and decap: only values other than none/basic are refused */
	if (encap != DEVLINK_ESWITCH_ENCAP_MODE_NONE && encap != DEVLINK_ESWITCH_ENCAP_MODE_BASIC)
		return -EOPNOTSUPP;
	spin_lock_bh(&d->lock);
	if (nsim_esw_mode_is_legacy(nsim_dev) || d->encap == encap) {
		d->encap = encap;
		goto unlock;
	}
	/* (mlx5 first refuses "Can't set encapsulation when flows are configured": netdevsim
	 * offloads no TC flows, so that rule cannot arise here)
	 */
	if (d->offloads && d->tunnel_ok) {
		NL_SET_ERR_MSG_MOD(extack, "Can't set encapsulation when IPsec SA and/or policies are configured");
		err = -EOPNOTSUPP;
		goto unlock;
	}
	d->encap = encap;
unlock:
	spin_unlock_bh(&d->lock);
	return err;
}

/* ---- IPsec objects of the PF (asked by lab/sim/ipsec.c) --------------------------------- */

/* mlx5_ipsec_device_caps: packet offload (and policy priorities) with dmfs, or smfs in legacy */
bool nsim_sim_packet_caps(struct netdevsim *ns)
{
	struct sim_dl *d = sim_dl(ns->nsim_dev);
	bool ok;

	if (!d)
		return true;
	spin_lock_bh(&d->lock);
	ok = !d->smfs || nsim_esw_mode_is_legacy(ns->nsim_dev);
	spin_unlock_bh(&d->lock);
	return ok;
}

/* An SA (not larval) or a policy is being offloaded: mlx5_eswitch_block_ipsec, then the IPsec
 * tables (rx_get/tx_get: mlx5_eswitch_block_mode, mlx5_eswitch_block_encap when the device can
 * do tunnel mode), then for a tunnel-mode packet SA the check of mlx5e_xfrm_add_state.
 */
int nsim_sim_ipsec_get(struct netdevsim *ns, bool tunnel_packet, struct netlink_ext_ack *extack)
{
	struct sim_dl *d = sim_dl(ns->nsim_dev);
	int err = 0;

	if (!d)
		return 0;
	spin_lock_bh(&d->lock);
	if (sim_ipsec_vfs(d)) {
		err = -EBUSY;	/* mlx5e_xfrm_add_state / _add_policy: no extack */
		goto unlock;
	}
	if (!d->offloads)
		d->tunnel_ok = nsim_esw_mode_is_legacy(ns->nsim_dev) ||
			       d->encap == DEVLINK_ESWITCH_ENCAP_MODE_NONE;
	if (tunnel_packet && !d->tunnel_ok) {
		NL_SET_ERR_MSG_MOD(extack, "Packet offload tunnel mode is disabled due to encap settings");
		err = -EINVAL;
		goto unlock;
	}
	d->offloads++;
unlock:
	spin_unlock_bh(&d->lock);
	return err;
}

void nsim_sim_ipsec_put(struct netdevsim *ns)
{
	struct sim_dl *d = sim_dl(ns->nsim_dev);

	if (!d)
		return;
	spin_lock_bh(&d->lock);
	if (!WARN_ON(!d->offloads))
		d->offloads--;
	spin_unlock_bh(&d->lock);
}

/* ---- port function ipsec_crypto / ipsec_packet (mlx5_devlink_port_fn_ipsec_*) ------------- */

/* the VF of a representor: its port functions are the IPsec capabilities of the VF function
 * attached to it (lab/sim/ipsec.c, debugfs sim_rep)
 */
bool nsim_sim_vf_cap(struct netdevsim *rep, bool packet)
{
	struct sim_dl *d = sim_dl(rep->nsim_dev);
	unsigned int vf = rep->nsim_dev_port->port_index - NSIM_DEV_VF_PORT_INDEX_BASE;
	bool ok;

	if (!d || vf >= SIM_MAX_VFS)
		return false;
	spin_lock_bh(&d->lock);
	ok = d->packet[vf] || (!packet && d->crypto[vf]);
	spin_unlock_bh(&d->lock);
	return ok;
}

/* VFs whose representor has a VF function attached (its "driver" bound); netdevsim's port list
 * is under the devlink instance lock, which the caller holds
 */
static void sim_vf_fns(struct nsim_dev *nsim_dev, bool *fn)
{
	struct nsim_dev_port *p;
	unsigned int vf;

	list_for_each_entry(p, &nsim_dev->port_list, list) {
		vf = p->port_index - NSIM_DEV_VF_PORT_INDEX_BASE;
		if (nsim_dev_port_is_vf(p) && vf < SIM_MAX_VFS && p->ns && READ_ONCE(p->ns->ipsec.sim_vf))
			fn[vf] = true;
	}
}

static int sim_port_vf(struct devlink_port *port)
{
	struct nsim_dev_port *p = container_of(port, struct nsim_dev_port, devlink_port);
	unsigned int vf = p->port_index - NSIM_DEV_VF_PORT_INDEX_BASE;

	return vf < SIM_MAX_VFS ? vf : -1;
}

static int sim_cap_get(struct devlink_port *port, bool packet, bool *is_enabled)
{
	struct sim_dl *d = sim_dl(devlink_priv(port->devlink));
	int vf = sim_port_vf(port);

	if (vf < 0)
		return -EOPNOTSUPP;
	spin_lock_bh(&d->lock);
	*is_enabled = packet ? d->packet[vf] : d->crypto[vf];
	spin_unlock_bh(&d->lock);
	return 0;
}

static int sim_cap_set(struct devlink_port *port, bool packet, bool enable,
		       struct netlink_ext_ack *extack)
{
	struct sim_dl *d = sim_dl(devlink_priv(port->devlink));
	bool fn[SIM_MAX_VFS] = {};
	int vf = sim_port_vf(port);
	bool *cap;
	int err = 0;

	if (vf < 0) {
		NL_SET_ERR_MSG_MOD(extack, "Eswitch vport is disabled");
		return -EOPNOTSUPP;
	}
	sim_vf_fns(d->nsim_dev, fn);
	spin_lock_bh(&d->lock);
	cap = packet ? &d->packet[vf] : &d->crypto[vf];
	if (*cap == enable)
		goto unlock;
	if (!sim_ipsec_vfs(d) && d->offloads) {
		err = -EBUSY;	/* no extack in mlx5 either */
		goto unlock;
	}
	/* mlx5 writes the VF's HCA caps (SET_HCA_CAP, other_function): refused while the VF's
	 * driver holds the function; the errno is the firmware's status, EBUSY here
	 */
	if (d->bound[vf] || fn[vf]) {
		if (packet)
			NL_SET_ERR_MSG_MOD(extack, "Failed to set IPsec packet mode");
		else
			NL_SET_ERR_MSG_MOD(extack, "Failed to set IPsec crypto");
		err = -EBUSY;
		goto unlock;
	}
	*cap = enable;
unlock:
	spin_unlock_bh(&d->lock);
	return err;
}

static int sim_crypto_get(struct devlink_port *port, bool *is_enabled, struct netlink_ext_ack *extack)
{
	return sim_cap_get(port, false, is_enabled);
}

static int sim_crypto_set(struct devlink_port *port, bool enable, struct netlink_ext_ack *extack)
{
	return sim_cap_set(port, false, enable, extack);
}

static int sim_packet_get(struct devlink_port *port, bool *is_enabled, struct netlink_ext_ack *extack)
{
	return sim_cap_get(port, true, is_enabled);
}

static int sim_packet_set(struct devlink_port *port, bool enable, struct netlink_ext_ack *extack)
{
	return sim_cap_set(port, true, enable, extack);
}

static const struct devlink_port_ops sim_vf_port_ops = {
	.port_fn_ipsec_crypto_get = sim_crypto_get,
	.port_fn_ipsec_crypto_set = sim_crypto_set,
	.port_fn_ipsec_packet_get = sim_packet_get,
	.port_fn_ipsec_packet_set = sim_packet_set,
};

/* the ops netdevsim registers a port with: VF ports get the IPsec capabilities, others none */
const struct devlink_port_ops *nsim_sim_port_ops(struct nsim_dev_port *nsim_dev_port)
{
	return nsim_dev_port_is_vf(nsim_dev_port) ? &sim_vf_port_ops : NULL;
}

/* ---- debugfs: sim_vf_bound (rw), sim_state (ro) ------------------------------------------ */

static ssize_t sim_bound_read(struct file *file, char __user *data, size_t count, loff_t *ppos)
{
	struct sim_dl *d = file->private_data;
	char buf[SIM_MAX_VFS * 4 + 2];
	int i, len = 0;

	spin_lock_bh(&d->lock);
	for (i = 0; i < SIM_MAX_VFS; i++)
		if (d->bound[i])
			len += scnprintf(buf + len, sizeof(buf) - len, "%s%d", len ? " " : "", i);
	spin_unlock_bh(&d->lock);
	len += scnprintf(buf + len, sizeof(buf) - len, "\n");
	return simple_read_from_buffer(data, count, ppos, buf, len);
}

static ssize_t sim_bound_write(struct file *file, const char __user *data, size_t count,
			       loff_t *ppos)
{
	struct sim_dl *d = file->private_data;
	bool bound[SIM_MAX_VFS] = {};
	char *buf, *p, *tok;
	unsigned int vf;
	int err = 0;

	if (count > 1024)
		return -EINVAL;
	buf = memdup_user_nul(data, count);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	p = buf;
	while ((tok = strsep(&p, " \t\n,")) != NULL) {
		if (!*tok)
			continue;
		if (kstrtouint(tok, 10, &vf) || vf >= SIM_MAX_VFS) {
			err = -EINVAL;
			break;
		}
		bound[vf] = true;
	}
	kfree(buf);
	if (err)
		return err;
	spin_lock_bh(&d->lock);
	memcpy(d->bound, bound, sizeof(bound));
	spin_unlock_bh(&d->lock);
	return count;
}

static const struct file_operations sim_bound_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = sim_bound_read,
	.write = sim_bound_write,
	.llseek = generic_file_llseek,
};

static ssize_t sim_state_read(struct file *file, char __user *data, size_t count, loff_t *ppos)
{
	struct sim_dl *d = file->private_data;
	char buf[SIM_MAX_VFS * 12 + 160];
	int i, len, vfs = sim_num_vfs(d->nsim_dev);
	struct devlink *devlink = priv_to_devlink(d->nsim_dev);
	bool fn[SIM_MAX_VFS] = {};

	/* not devl_lock: netdevsim's remove holds it while it removes this file, which waits for
	 * readers; try for a second, as netdevsim's trap worker does with devl_trylock
	 */
	for (i = 0; !devl_trylock(devlink); i++) {
		if (i == 100)
			return -EBUSY;
		msleep(10);
	}
	sim_vf_fns(d->nsim_dev, fn);
	devl_unlock(devlink);
	spin_lock_bh(&d->lock);
	len = scnprintf(buf, sizeof(buf),
			"flow_steering_mode=%s encap=%s ipsec_offloads=%u tunnel_ok=%d ipsec_vfs=%u\n",
			d->smfs ? "smfs" : "dmfs",
			d->encap == DEVLINK_ESWITCH_ENCAP_MODE_BASIC ? "basic" : "none",
			d->offloads, d->offloads ? d->tunnel_ok : 0, sim_ipsec_vfs(d));
	for (i = 0; i < vfs; i++)
		len += scnprintf(buf + len, sizeof(buf) - len, "vf%d crypto=%d packet=%d bound=%d\n",
				 i, d->crypto[i], d->packet[i], d->bound[i] || fn[i]);
	spin_unlock_bh(&d->lock);
	return simple_read_from_buffer(data, count, ppos, buf, len);
}

static const struct file_operations sim_state_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = sim_state_read,
	.llseek = generic_file_llseek,
};

/* ---- life cycle (netdevsim's probe and remove, devlink instance locked) ------------------ */

int nsim_sim_devlink_init(struct nsim_dev *nsim_dev)
{
	struct devlink *devlink = priv_to_devlink(nsim_dev);
	struct sim_dl *d;
	int err;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;
	d->nsim_dev = nsim_dev;
	spin_lock_init(&d->lock);
	d->smfs = true;					/* mlx5_fs_core_alloc with SW steering */
	d->encap = DEVLINK_ESWITCH_ENCAP_MODE_BASIC;	/* mlx5_eswitch_init with reformat + decap */
	nsim_dev->sim = d;
	err = devl_params_register(devlink, sim_params, ARRAY_SIZE(sim_params));
	if (err) {
		nsim_dev->sim = NULL;
		kfree(d);
		return err;
	}
	return 0;
}

/* nsim_dev->ddir exists only after netdevsim's debugfs init, which runs after the params; the
 * files go with netdevsim's debugfs_remove_recursive of that directory
 */
void nsim_sim_devlink_debugfs(struct nsim_dev *nsim_dev)
{
	struct sim_dl *d = sim_dl(nsim_dev);

	if (!d)
		return;
	debugfs_create_file("sim_vf_bound", 0600, nsim_dev->ddir, d, &sim_bound_fops);
	debugfs_create_file("sim_state", 0400, nsim_dev->ddir, d, &sim_state_fops);
}

/* before netdevsim unregisters its own params (probe's error path and remove) */
void nsim_sim_devlink_exit(struct nsim_dev *nsim_dev)
{
	struct sim_dl *d = sim_dl(nsim_dev);

	if (!d)
		return;
	devl_params_unregister(priv_to_devlink(nsim_dev), sim_params, ARRAY_SIZE(sim_params));
	nsim_dev->sim = NULL;
	kfree(d);
}
