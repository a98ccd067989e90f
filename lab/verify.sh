#!/usr/bin/env bash
# playbooks/verify.yml on ordinary hosts, on the lab pair (lab/lab.sh), one command:
#   nosa    no SA of the collection on either host (fresh pair, inventories/examples/lab): verify.yml
#           must fail with its own message per host ("no SAs of this collection to count on labN ...
#           run site.yml first"), never with a template error ('verify_rows' is undefined)
#   nordma  both VMs without the kernel's RDMA core (modprobe.d: "install ib_core /bin/false", so
#           `rdma link show` answers "Failed to open NETLINK_RDMA socket", as on a host without RDMA):
#           site.yml, then verify.yml with the default verify_rdma=auto must pass with ping (the
#           table names why), and -e verify_rdma=rxe must fail with a message naming the RDMA core
#   netns   IPsec on vf0 inside ns0 (inventories/examples/lab-roce), still without RDMA core:
#           site.yml, verify.yml passes with ping, the SAs of ns0 in the table
#   nic     the simulated ConnectX (netdevsim + lab/sim, link0 as its wire, docs/lab-sim.md) on both
#           VMs, IPsec packet offload on its netdev (ipsec_preflight_strict=false: the driver is not
#           mlx5_core): site.yml, verify.yml passes and its table carries the NIC's ipsec_* counters
#           of BOTH hosts, risen by the pings
# Every stage checks the table: one row per owned SA per host, plain text (no quoted list), a
# summary row per host; then teardown.yml leaves nothing owned. Prints a report with timings;
# exit status 0 only if every stage passed.
#
#   bash lab/verify.sh                  # STAGES="nosa nordma netns nic"; LAB_KEEP=1 keeps the VMs
#
# Own lab pair (LAB_RUN=lab/run/verify, SSH 2351/2352, link 4531); a running pair is reused.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair verify 2351 2352 4531
STAGES=${STAGES:-nosa nordma netns nic}
for _s in $STAGES; do
	case $_s in nosa | nordma | netns | nic) ;; *) die "STAGES: unknown stage '$_s' (nosa nordma netns nic)" ;; esac
done
NORDMA=/etc/modprobe.d/lab-verify-no-rdma.conf
NSIM_ID=7

report_init "lab verify.yml report"
T0=$(now)
lab_start

t=$(now)
if r=$(play prepare "" lab/prepare.yml); then record "lab/prepare.yml (modules, OVS)" "$r ($(elapsed "$t") s)"
else bad "lab/prepare.yml" "$r"; exit 1; fi

# table rows of the verify log: owned-SA rows of labN (their 'pass' column), summaries, NIC rows
sa_rows() { verify_table "$1" | grep -E "^lab$2 +0x[0-9a-f]{8} " || true; }
nic_rows() { verify_table "$1" | grep -E "^lab$2 +NIC " || true; }
# the table printed as a list of quoted strings (the old form) or JSON would show up here
quoted() { awk '/^TASK \[.*verify : Report/ {r = 1; next} /^TASK / {r = 0} r' "$1" | grep -cE '^ *"|"msg": \[' || true; }

check_table() { # check_table STAGE LOG NEED_ROWS: NEED_ROWS owned-SA rows per host, all PASS, plain text
	local stage=$1 log=$2 need=$3 n rows
	verify_table "$log" > "$OUT/$stage-table.txt"
	while read -r line; do record "  $stage table" "$line"; done < "$OUT/$stage-table.txt"
	[ "$(quoted "$log")" = 0 ] || { bad "$stage: table is plain text" "quoted lines in the Report task (log $log)"; return 1; }
	for n in 1 2; do
		rows=$(sa_rows "$log" "$n")
		if [ "$(grep -c . <<< "$rows")" -lt "$need" ] || grep -qv ' PASS$' <<< "$rows"; then
			bad "$stage: lab$n has >= $need owned-SA rows, all PASS" "see $OUT/$stage-table.txt"; return 1
		fi
		grep -qE "^lab$n .*: PASS$" "$OUT/$stage-table.txt" || { bad "$stage: lab$n summary row PASS" "see $OUT/$stage-table.txt"; return 1; }
	done
	record "$stage: table" "plain text, >= $need owned-SA rows per host, all PASS"
}

teardown() { # teardown STAGE INV [ARGS..]: nothing owned left (in namespace NS when $NS is set)
	local stage=$1 inv=$2 t r n; shift 2
	t=$(now); r=$(play "$stage-teardown" "$inv" playbooks/teardown.yml "$@") || { bad "$stage: teardown.yml" "$r"; return 1; }
	for n in 1 2; do
		[ "$(owned_sas "$n" "${NS:-}")$(owned_sps "$n" "${NS:-}")" = 00 ] || { bad "$stage: teardown left owned SAs/SPs on lab$n" "$(owned_sas "$n" "${NS:-}")"; return 1; }
	done
	record "$stage: teardown.yml (nothing owned left)" "$r ($(elapsed "$t") s)"
}

stage_nosa() {
	local t r n
	t=$(now); r=$(play nosa-verify lab playbooks/verify.yml) && { bad "nosa: verify.yml without SAs" "passed ($r)"; return 1; }
	record "nosa: verify.yml without owned SAs (must fail)" "$r ($(elapsed "$t") s)"
	if grep -q 'is undefined' "$OUT/nosa-verify.log"; then bad "nosa: no template error" "$(grep -m1 'is undefined' "$OUT/nosa-verify.log" | cut -c1-200)"; return 1; fi
	for n in 1 2; do
		grep -q "IPsec verification failed on lab$n (ping): no SAs of this collection to count on lab$n (owned reqid range" "$OUT/nosa-verify.log" \
			|| { bad "nosa: lab$n fails with its own message" "see $OUT/nosa-verify.log"; return 1; }
	done
	record "nosa: message (lab1)" "$(grep -o 'IPsec verification failed on lab1[^"]*' "$OUT/nosa-verify.log" | head -n 1 | cut -c1-200)"
	verify_table "$OUT/nosa-verify.log" > "$OUT/nosa-table.txt"
	while read -r line; do record "  nosa table" "$line"; done < "$OUT/nosa-table.txt"
}

no_rdma_core() { # both VMs: ib_core can neither be loaded nor is it; rdma must answer with NETLINK_RDMA
	local n msg
	for n in 1 2; do
		# unload it when an earlier stage's rdma call loaded it (nothing uses it), then block it
		on "$n" "echo 'install ib_core /bin/false' > $NORDMA; ! grep -q '^ib_core ' /proc/modules || modprobe -r ib_core" \
			|| { bad "lab$n without RDMA core" "ib_core is loaded and cannot be unloaded"; return 1; }
		msg=$(on "$n" 'rdma link show 2>&1; echo "rc=$?"' | xargs)
		record "lab$n: rdma link show (RDMA core blocked)" "$msg"
		grep -q 'Failed to open NETLINK_RDMA socket rc=1' <<< "$msg" || { bad "lab$n: rdma fails like a host without RDMA" "$msg"; return 1; }
	done
}

stage_nordma() {
	local t r
	no_rdma_core || return 1
	t=$(now); r=$(play nordma-converge lab playbooks/site.yml) || { bad "nordma: site.yml" "$r"; return 1; }
	record "nordma: site.yml converge (inventories/examples/lab)" "$r ($(elapsed "$t") s)"
	t=$(now); r=$(play nordma-verify lab playbooks/verify.yml -e verify_count=10) || { bad "nordma: verify.yml (verify_rdma=auto)" "$r (log $OUT/nordma-verify.log)"; return 1; }
	record "nordma: verify.yml, verify_rdma=auto (default)" "$r ($(elapsed "$t") s)"
	check_table nordma "$OUT/nordma-verify.log" 2 || return 1
	grep -qE '^lab1 +ping .*NETLINK_RDMA' "$OUT/nordma-table.txt" || { bad "nordma: the table says why it pinged" "see $OUT/nordma-table.txt"; return 1; }
	t=$(now); r=$(play nordma-verify-rxe lab playbooks/verify.yml -e verify_rdma=rxe) && { bad "nordma: verify.yml -e verify_rdma=rxe" "passed without RDMA core"; return 1; }
	grep -q 'cannot list the RDMA links: .*NETLINK_RDMA.*modprobe rdma_rxe' "$OUT/nordma-verify-rxe.log" \
		|| { bad "nordma: verify_rdma=rxe fails naming the RDMA core" "see $OUT/nordma-verify-rxe.log"; return 1; }
	record "nordma: verify.yml -e verify_rdma=rxe (must fail)" "$r, $(grep -o 'cannot list the RDMA links: [^"]*' "$OUT/nordma-verify-rxe.log" | head -n 1 | cut -c1-160) ($(elapsed "$t") s)"
	teardown nordma lab
}

stage_netns() {
	local t r
	lab_reset || return 1
	no_rdma_core || return 1
	t=$(now); r=$(play netns-converge lab-roce playbooks/site.yml) || { bad "netns: site.yml (IPsec on vf0 in ns0)" "$r"; return 1; }
	record "netns: site.yml converge (inventories/examples/lab-roce, ns0)" "$r ($(elapsed "$t") s)"
	t=$(now); r=$(play netns-verify lab-roce playbooks/verify.yml -e verify_count=10) || { bad "netns: verify.yml" "$r (log $OUT/netns-verify.log)"; return 1; }
	record "netns: verify.yml (SAs in ns0, verify_rdma=auto)" "$r ($(elapsed "$t") s)"
	check_table netns "$OUT/netns-verify.log" 2 || return 1
	[ "$(sa_rows "$OUT/netns-verify.log" 1 | grep -c '192\.168\.10\.')" -ge 2 ] || { bad "netns: rows are the SAs of ns0" "see $OUT/netns-table.txt"; return 1; }
	NS=ns0 teardown netns lab-roce || return 1
	lab_reset
}

# shellcheck disable=SC2016 # expanded on the VM
NSIM_UP='set -eu; d=/sys/bus/netdevsim/devices/netdevsim'$NSIM_ID'
grep -q "^netdevsim " /proc/modules || modprobe netdevsim
[ -e $d ] || echo "'$NSIM_ID' 1" > /sys/bus/netdevsim/new_device
for i in $(seq 50); do [ -n "$(ls $d/net 2>/dev/null)" ] && break; sleep 0.1; done
up=$(ls $d/net)
echo link0 > /sys/kernel/debug/netdevsim/netdevsim'$NSIM_ID'/ports/0/sim_lower
ip link set link0 promisc on; sysctl -qw net.ipv4.conf.link0.arp_ignore=1
ip addr replace 198.51.100.$1/24 dev $up; ip link set $up up
echo $up'
# shellcheck disable=SC2016 # expanded on the VM
NSIM_DOWN='d=/sys/kernel/debug/netdevsim/netdevsim'$NSIM_ID'
[ -e $d ] && echo > $d/ports/0/sim_lower
[ -e /sys/bus/netdevsim/devices/netdevsim'$NSIM_ID' ] && echo '$NSIM_ID' > /sys/bus/netdevsim/del_device
sysctl -qw net.ipv4.conf.link0.arp_ignore=0; ip link set link0 promisc off; true'

stage_nic() {
	local t r n up1 up2 inv="$OUT/nic-inventory.yml" rows
	for n in 1 2; do on "$n" "rm -f $NORDMA"; done
	if ! up1=$(on 1 "bash -c '$NSIM_UP' - 1") || ! up2=$(on 2 "bash -c '$NSIM_UP' - 2"); then
		bad "nic: netdevsim with link0 as its wire" "see above"; return 1
	fi
	record "nic: simulated ConnectX on lab1 / lab2 (wire link0)" "$up1 198.51.100.1 / $up2 198.51.100.2"
	cat > "$inv" <<-EOF
	all:
	  children:
	    ipsec_sim:
	      hosts:
	        lab1: {ipsec_local_ip: 198.51.100.1, ipsec_dev: $up1}
	        lab2: {ipsec_local_ip: 198.51.100.2, ipsec_dev: $up2}
	      vars:
	        ipsec_meshes: [ipsec_sim]
	        ipsec_offload: packet
	        ipsec_mode: transport
	        ipsec_key_bits: 256
	        ipsec_preflight_strict: false   # the simulated NIC's driver is netdevsim, not mlx5_core
	EOF
	t=$(now); r=$(nic_play nic-converge playbooks/site.yml) || { bad "nic: site.yml (packet offload on the sim)" "$r (log $OUT/nic-converge.log)"; return 1; }
	record "nic: site.yml converge (offload packet on $up1 / $up2)" "$r ($(elapsed "$t") s)"
	record "nic: lab1 owned SAs with offload packet" "$(on 1 'ip xfrm state list nokeys' | python3 "$LAB_DIR/owned.py" sas --offload "$up1:packet")"
	t=$(now); r=$(nic_play nic-verify playbooks/verify.yml -e verify_count=10) || { bad "nic: verify.yml" "$r (log $OUT/nic-verify.log)"; return 1; }
	record "nic: verify.yml" "$r ($(elapsed "$t") s)"
	check_table nic "$OUT/nic-verify.log" 2 || return 1
	for n in 1 2; do
		rows=$(nic_rows "$OUT/nic-verify.log" "$n")
		# ipsec_tx_pkts / ipsec_rx_pkts rose by >= 10 (10 pings each way through the device)
		awk '$4 == "ipsec_tx_pkts" || $4 == "ipsec_rx_pkts" {if ($7 >= 10) ok++} END {exit ok == 2 ? 0 : 1}' <<< "$rows" \
			|| { bad "nic: lab$n NIC ipsec_tx/rx_pkts rows, each +10 or more" "$(xargs <<< "$rows")"; return 1; }
	done
	record "nic: NIC ipsec_* rows for both hosts" "ipsec_tx_pkts and ipsec_rx_pkts +10 or more on lab1 and lab2"
	t=$(now); r=$(nic_play nic-teardown playbooks/teardown.yml) || { bad "nic: teardown.yml" "$r"; return 1; }
	record "nic: teardown.yml" "$r ($(elapsed "$t") s)"
	for n in 1 2; do on "$n" "$NSIM_DOWN"; done
	[ "$(owned_sas 1)$(owned_sps 1)$(owned_sas 2)$(owned_sps 2)" = 0000 ] || { bad "nic: nothing owned left" "owned SAs/SPs remain"; return 1; }
	record "nic: netdevsim removed, nothing owned left" "ok"
}
nic_play() { # like play(), with the stage's own inventory and key store
	local pb=$2 rc=0 log="$OUT/$1.log"; shift 2
	ansible-playbook -i "$RUN/inventory.yml" -i "$OUT/nic-inventory.yml" -e "ipsec_keystore_path=$RUN/keystore-sim.yml" \
		"$REPO_ROOT/$pb" "$@" > "$log" 2>&1 || rc=$?
	awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]}} END{printf "changed=%d failed=%d", c, f}' "$log"
	if [ "$rc" != 0 ]; then grep -E '^(fatal|failed):' "$log" | cut -c1-400 | head -n 4 >&2; fi
	return "$rc"
}

cleanup_vms() { # best effort, whatever a failed stage left: the RDMA block, the sim, owned objects
	local n
	for n in 1 2; do on "$n" "rm -f $NORDMA; $NSIM_DOWN" > /dev/null 2>&1 || true; done
}

# a reused pair may carry owned objects from an earlier run
if [ "$(owned_sas 1)$(owned_sps 1)$(owned_sas 2)$(owned_sps 2)" != 0000 ]; then
	play teardown-before lab playbooks/teardown.yml > /dev/null || true
fi
for stage in $STAGES; do
	T=$(now)
	if "stage_$stage"; then record "$stage: stage total" "$(elapsed "$T") s"
	else
		play "$stage-teardown-after-failure" lab playbooks/teardown.yml > /dev/null 2>&1 || true
		[ "$stage" != netns ] || { play netns-teardown-after-failure lab-roce playbooks/teardown.yml > /dev/null 2>&1 || true; lab_reset > /dev/null 2>&1 || true; }
		[ "$stage" != nic ] || nic_play nic-teardown-after-failure playbooks/teardown.yml > /dev/null 2>&1 || true
	fi
done
cleanup_vms
record "total" "$(elapsed "$T0") s"
