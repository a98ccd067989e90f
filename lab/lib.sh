# shellcheck shell=bash
# Shared helpers of the lab scripts (demo.sh, topologies.sh, and the lab suites). Sourced, not run.
#
#   source "$LAB_DIR/lib.sh"
#   lab_pair NAME SSH1 SSH2 LINK   # own pair: LAB_RUN=lab/run/NAME (unless set), ports unless set;
#                                  # sets RUN and OUT=$RUN/NAME (logs), creates them
#   report_init "TITLE"            # EXIT trap: prints the report, RESULT: PASS|FAIL, stops the pair
#                                  # unless LAB_KEEP=1
#   lab_start                      # apt setup, image (cached), venv, boot (or reuse) the pair,
#                                  # collection symlink farm + ANSIBLE_* environment
#   record LABEL VALUE ; bad LABEL WHY (marks the run failed, returns 1) ; now ; elapsed T0
#   on N CMD...                    # ssh to labN (stdin closed)
#   play LOG INV PLAYBOOK [ARGS..] # ansible-playbook with the pair's inventory (+ inventories/examples/INV
#                                  # unless INV is empty) and the key store $RUN/keystore-INV.yml;
#                                  # prints "changed=N failed=N"; returns ansible's status
#   owned_sas N [NS] ; owned_sps N [NS] ; owned_packets N [NS] ; owned_tc N ; all_sas N [NS] ; all_sps N [NS]
#   xfrm_stat_delta BEFORE AFTER   # the /proc/net/xfrm_stat counters that moved between two copies
#   lab_reset                      # VF stand-in back to its boot state, link0 MTU 1500, no ingress qdisc
#   verify_table LOG               # the verify role's table (one line per owned SA and host) from a
#                                  # verify.yml log, one line each
# Owned (lab/owned.py): reqid in the collection's owned range (_xfrm.OWNED_REQID_RANGE, 0x51c00000-
# 0x51c0ffff); tc rules whose first action cookie starts with 69706f2d6d6c7835 ("ipo-mlx5").
LAB_DIR=${LAB_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck source=../scripts/common.sh
source "$LAB_DIR/../scripts/common.sh"

lab_pair() {
	local name=$1
	export LAB_RUN=${LAB_RUN:-$LAB_DIR/run/$name}
	export LAB_SSH_PORT1=${LAB_SSH_PORT1:-$2} LAB_SSH_PORT2=${LAB_SSH_PORT2:-$3} LAB_LINK_PORT=${LAB_LINK_PORT:-$4}
	RUN=$LAB_RUN
	OUT=$RUN/$name
	mkdir -p "$OUT"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
declare -a REPORT=()
FAILED=0
REPORT_TITLE="lab report"
record() { REPORT+=("$(printf '%-56s %s' "$1" "$2")"); printf '%-56s %s\n' "$1" "$2" >&2; }
bad() { record "$1" "FAIL: $2"; FAILED=1; return 1; }
_report_finish() {
	local rc=$?
	[ "$FAILED" = 0 ] || rc=1
	printf '\n===== %s (%s) =====\n' "$REPORT_TITLE" "$(date -u +%FT%TZ)"
	printf '%s\n' "${REPORT[@]}"
	if [ "$rc" -eq 0 ]; then printf 'RESULT: PASS\n'; else printf 'RESULT: FAIL (rc=%s; logs in %s)\n' "$rc" "${OUT:-?}"; fi
	if [ "${LAB_KEEP:-0}" != 1 ]; then bash "$LAB_DIR/lab.sh" down > /dev/null 2>&1 || true; fi
	exit "$rc"
}
report_init() {
	REPORT_TITLE=$1
	trap _report_finish EXIT
	# set -e stops a suite at a failed command: say which (the report alone would only say FAIL)
	trap 'record "stopped by a failed command" "line $LINENO: $BASH_COMMAND (exit $?)"; FAILED=1' ERR
	# a run stopped by a signal never reports PASS (the EXIT trap would see the status of the last command)
	trap 'record "interrupted" "SIGTERM"; FAILED=1; exit 143' TERM
	trap 'record "interrupted" "SIGINT"; FAILED=1; exit 130' INT
}

lab_start() {
	local t
	t=$(now); bash "$LAB_DIR/lab.sh" setup; bash "$LAB_DIR/lab.sh" build > /dev/null
	record "lab setup + image (cached when unchanged)" "$(elapsed "$t") s"
	venv_need "$REPO_ROOT/tests/requirements.txt"
	t=$(now); bash "$LAB_DIR/lab.sh" up; record "boot (or reuse) the pair to SSH" "$(elapsed "$t") s"
	# The collection as Ansible sees an installed one: a symlink farm onto the work tree.
	COLL=$RUN/collections
	mkdir -p "$COLL/ansible_collections/ipsec_offload"
	ln -sfn "$REPO_ROOT" "$COLL/ansible_collections/ipsec_offload/mlx5"
	export ANSIBLE_COLLECTIONS_PATH=$COLL ANSIBLE_PIPELINING=1 ANSIBLE_HOST_KEY_CHECKING=False \
		ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0
}

on() { local n=$1; shift; ssh -F "$RUN/ssh_config" "lab$n" "$@" < /dev/null; }
# on() with patience, for the suites that run beside another lab pair (rekey.sh, lifecycle.sh:
# `on() { on_patient "$@"; }`): with many TCG VMs on the host a VM's sshd can miss the lab's
# ConnectTimeout (10 s: "Connection timed out during banner exchange"); a failed connection (ssh
# status 255, the command never ran) is retried twice with a 60 s connect timeout
on_patient() {
	local n=$1 rc i; shift
	for i in 1 2 3; do
		rc=0; ssh -F "$RUN/ssh_config" -o ConnectTimeout=60 "lab$n" "$@" < /dev/null || rc=$?
		[ "$rc" = 255 ] || return "$rc"
		echo "lab$n: ssh connection failed (try $i of 3)" >&2; sleep 5
	done
	return 255
}

# Counts of the collection's objects on labN (in namespace $2), read on the controller with the
# collection's own parsers (lab/owned.py: _xfrm_text for ip xfrm, _tc for tc -j)
owned_sas() { on "$1" "ip ${2:+-n $2} xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" sas; }
owned_sps() { on "$1" "ip ${2:+-n $2} xfrm policy list" | python3 "$LAB_DIR/owned.py" sps; }
# every SA / policy, owned or not
all_sas() { on "$1" "ip ${2:+-n $2} xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" sas --all; }
all_sps() { on "$1" "ip ${2:+-n $2} xfrm policy list" | python3 "$LAB_DIR/owned.py" sps --all; }
# xfrm_stat_delta BEFORE AFTER: the /proc/net/xfrm_stat counters that moved between two copies, "Name +N ..."
xfrm_stat_delta() { python3 "$LAB_DIR/owned.py" xfrm-stat-delta "$1" < "$2"; }
# packets counted by the owned SAs (their "lifetime current" lines)
owned_packets() { on "$1" "ip ${2:+-n $2} -s xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" packets; }
# owned tc rules: flower filters whose first action carries the collection's cookie
# shellcheck disable=SC2016 # expanded on the VM
owned_tc() {
	on "$1" 'for d in link0 vf0_rep '"$SIM_PF $SIM_VF_REP"'; do echo "#dev $d"; tc -j filter show dev $d ingress 2>/dev/null; done' \
		| python3 "$LAB_DIR/owned.py" tc
}

play() {
	local name=$1 inv=$2 pb=$3 rc=0; shift 3
	local log="$OUT/$name.log" store=$RUN/keystore.yml
	[ -z "$inv" ] || store=$RUN/keystore-${inv#lab-}.yml
	ansible-playbook -i "$RUN/inventory.yml" ${inv:+-i "$REPO_ROOT/inventories/examples/$inv"} \
		-e "ipsec_keystore_path=$store" "$REPO_ROOT/$pb" "$@" > "$log" 2>&1 || rc=$?
	awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]}} END{printf "changed=%d failed=%d", c, f}' "$log"
	if [ "$rc" != 0 ]; then grep -E '^(fatal|failed):' "$log" | cut -c1-400 | head -n 4 >&2; fi
	return "$rc"
}

# shellcheck disable=SC2016 # expanded on the VM
lab_reset() { # lab only: back to the boot state of the VF stand-in and link0 (and of the sim's VF netdev)
	local n
	for n in 1 2; do
		on "$n" 'ip -n ns0 link show vf0 >/dev/null 2>&1 && ip -n ns0 link set vf0 netns 1
			ip netns list | grep -qw ns0 && ip netns del ns0
			ip addr flush dev vf0 scope global; ip link set vf0 down; ip link set vf0_rep down
			ip link set link0 mtu 1500
			if ip link show '"$SIM_VF"' >/dev/null 2>&1; then ip addr flush dev '"$SIM_VF"' scope global; ip link set '"$SIM_VF"' down; fi
			for d in link0 vf0_rep '"$SIM_PF $SIM_VF_REP"'; do tc qdisc del dev $d ingress 2>/dev/null; done; true' \
			|| { bad "lab$n reset" "ssh failed"; return 1; }
	done
}

# The simulated ConnectX (lab/sim, docs/lab-sim.md) on VM N, named as lab.sh up writes it into the
# inventory (lab_sim_devlink netdevsim/netdevsim1, lab_sim_pf nsim0, lab_sim_wire link0): one port,
# link0 as its wire (promiscuous; arp_ignore so that only the sim answers for its address), a fixed
# MAC (02:00:c6:33:64:0N, as a NIC keeps across reboots) and 198.51.100.N/24. Prints its netdev.
# sim_down N removes it and gives link0 back as lab/prepare.yml leaves it: promiscuous (the RoCE
# topology's QinQ frames carry vf0's MAC, which a non-promiscuous link0 drops), GRO on, arp_ignore 0.
# shellcheck disable=SC2034 # SIM_DEVLINK is read by lab/topologies.sh, which sources this file
SIM_ID=1 SIM_PF=nsim0 SIM_DEVLINK=netdevsim/netdevsim1
sim_up() {
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'set -eu; n='"$1"' d=/sys/bus/netdevsim/devices/netdevsim'$SIM_ID'
for m in netdevsim esp4 esp4_offload xfrm_user; do [ -d /sys/module/$m ] || modprobe $m; done
[ -e $d ] || echo "'$SIM_ID' 1" > /sys/bus/netdevsim/new_device
for i in $(seq 50); do [ -n "$(ls $d/net 2>/dev/null)" ] && break; sleep 0.1; done
up=$(ls $d/net)
[ "$up" = '$SIM_PF' ] || ip link set dev "$up" name '$SIM_PF'
ip link set dev link0 promisc on
sysctl -qw net.ipv4.conf.link0.arp_ignore=1
echo link0 > /sys/kernel/debug/netdevsim/netdevsim'$SIM_ID'/ports/0/sim_lower
ip link set dev '$SIM_PF' down
ip link set dev '$SIM_PF' address 02:00:c6:33:64:0$n
ip link set dev '$SIM_PF' up
ip addr replace 198.51.100.$n/24 dev '$SIM_PF'
echo '$SIM_PF''
}
# sim_vf_bind N: the sim's stand-in for what binding VF 0 to its driver does on a ConnectX (on
# hardware: mlx_devlink_eswitch's rebind after unbind_vfs, then mlx5_core's probe makes the VF's
# netdev with the IPsec capabilities its port function had while it was unbound). netdevsim VFs
# have no PCI function, so the lab makes the VF's netdev as a one-port netdevsim device (id
# SIM_VF_ID, netdev SIM_VF, fixed MAC 02:00:c6:33:65:0N) and attaches it to VF 0's representor
# (renamed SIM_VF_REP, mlx5's naming) through the sim's debugfs sim_rep: from then on VF 0 counts
# as bound, packets the VF netdev sends arrive on the representor and the other way round, and
# its IPsec offload has VF 0's ipsec_crypto/ipsec_packet. Needs switchdev (the representor).
# Idempotent. sim_vf_unbind N removes the VF netdev (the kernel flushes what was offloaded to it).
# shellcheck disable=SC2034 # read by lab/topologies.sh and lab/device.sh, which source this file
SIM_VF_ID=11 SIM_VF=nsim0v0 SIM_VF_REP=nsim0pf0vf0
sim_vf_bind() {
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'set -eu; n='"$1"' pf=/sys/bus/netdevsim/devices/netdevsim'$SIM_ID' d=/sys/bus/netdevsim/devices/netdevsim'$SIM_VF_ID'
f=/sys/kernel/debug/netdevsim/netdevsim'$SIM_VF_ID'/ports/0/sim_rep
if [ -e $f ] && [ "$(cat $f)" = '$SIM_VF_REP' ]; then echo '$SIM_VF'; exit 0; fi
rep=$(devlink -j port show '$SIM_DEVLINK'/128 2>/dev/null | python3 -c "import json,sys; p=json.load(sys.stdin)[\"port\"]; print(next(iter(p.values())).get(\"netdev\", \"\"))" || true)
[ -n "$rep" ] || { echo "sim_vf_bind: no representor of VF 0 ('$SIM_DEVLINK'/128): VFs made and switchdev first" >&2; exit 1; }
if [ "$rep" != '$SIM_VF_REP' ]; then ip link set dev "$rep" down; ip link set dev "$rep" name '$SIM_VF_REP'; fi
[ -e $d ] || echo "'$SIM_VF_ID' 1" > /sys/bus/netdevsim/new_device
for i in $(seq 50); do [ -n "$(ls $d/net 2>/dev/null)" ] && break; sleep 0.1; done
vf=$(ls $d/net)
if [ "$vf" != '$SIM_VF' ]; then ip link set dev "$vf" down; ip link set dev "$vf" name '$SIM_VF'; ip link set dev '$SIM_VF' address 02:00:c6:33:65:0$n; fi
echo '$SIM_VF_REP' > $f
echo '$SIM_VF''
}
sim_vf_unbind() {
	on "$1" '[ -e /sys/bus/netdevsim/devices/netdevsim'$SIM_VF_ID' ] && echo '$SIM_VF_ID' > /sys/bus/netdevsim/del_device; true'
}
sim_down() {
	sim_vf_unbind "$1"
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'd=/sys/kernel/debug/netdevsim/netdevsim'$SIM_ID'
[ -e $d ] && echo > $d/ports/0/sim_lower
[ -e /sys/bus/netdevsim/devices/netdevsim'$SIM_ID' ] && echo '$SIM_ID' > /sys/bus/netdevsim/del_device
sysctl -qw net.ipv4.conf.link0.arp_ignore=0; ethtool -K link0 gro on 2>/dev/null; true'
}

# The lines of the verify role's "Report (one table ...)" task in a verify.yml log: one loop item
# per table line ("ok: [HOST] => (item=LINE)"), printed as LINE.
verify_table() {
	awk '/^TASK \[.*verify : Report/ {r = 1; next} /^TASK / {r = 0}
		r && /^ok: \[[^]]*\] => \(item=/ {sub(/^ok: \[[^]]*\] => \(item=/, ""); sub(/\)$/, ""); print}' "$1"
}
