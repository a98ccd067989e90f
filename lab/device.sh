#!/usr/bin/env bash
# Device-layer tests on netdevsim inside the lab VMs (the pair of lab/lab.sh; lab1, and lab2 for the
# datapath part). The REAL modules run against a real kernel's devlink/sysfs/xfrm through Ansible, and every
# step is asserted twice: on the module's result and on an independent read of the kernel state
# (devlink -j, sysfs, ip link / ip xfrm, netdevsim's debugfs table), see lab/device/vars.yml.
#   setup     modprobe netdevsim (+ esp4, esp4_offload, xfrm_user when missing), echo "1 1" >
#             /sys/bus/netdevsim/new_device, the device's netdev up (it is the "uplink" below)
#   sriov     lab/device/sriov.yml   mlx_sriov: 0 -> 2 VFs (check mode first) -> 2 (changed=false, by
#             handle and by PF netdev) -> 5 refused (max_vfs 4) -> 3 (through 0) -> 0
#   eswitch   lab/device/eswitch.yml mlx_devlink_eswitch (+ mlx_sriov, xfrm_offload_state) on mlx5's
#             devlink rules: defaults smfs/encap basic -> hmfs refused by the kernel -> dmfs, encap
#             none, switchdev in that order (check mode first; representors, VF ports with ipsec caps)
#             -> changed=false -> refused: VF count in switchdev, smfs in switchdev, ipsec_packet on a
#             bound VF (debugfs sim_vf_bound) -> ipsec_packet on VF 0 (changed=false again) -> the PF's
#             SA refused while a VF has it -> a packet SA on the PF: first VF cap, mode and encap
#             changes refused (module first, devlink by hand gives the kernel's words) -> encap basic:
#             tunnel-mode packet SA refused -> smfs switchdev: packet offload refused -> dmfs via
#             legacy -> back to legacy/smfs/basic -> switchdev + ipsec_packet on a bound VF from legacy:
#             the mode change is undone -> 0 VFs with allow_switchdev: netdevsim falls back to legacy
#   xfrm      lab/device/xfrm.yml    xfrm_offload_state offload crypto on the uplink (ip shows the
#             kernel's offload line) -> changed=false -> ipsec_offload_info -> eswitch refuses a mode
#             change while SAs are offloaded -> a third SA with offload packet added -> deleted
#   packet    lab/device/packet.yml  packet offload of an SA pair (AES-256, ESN) and its SA policies
#             with the 4 guards beside them -> changed=false -> a policy mlx5 refuses (priority
#             0xffffffff): the device's message + hint, nothing changed -> uplink down: the kernel
#             flushes the packet SAs and policies, the guards stay -> guards removed
#   datapath  lab/device/datapath.yml (both VMs) traffic over packet offload: link0 as the simulated
#             NICs' wire, SAs + SA policies (packet) + guards by the modules on both hosts, pings
#             both ways: all answered, only ESP on the wire, ethtool ipsec_tx/rx and SA counters up
#             on both hosts, second run unchanged, all removed
#   vf        lab/device/vf.yml      the VF's own netdev (a netdevsim device attached to VF 0's
#             representor through the sim's debugfs sim_rep: the lab's stand-in for binding VF 0):
#             without ipsec_packet a packet SA on it refused (mlx5's message + hint) and a crypto SA
#             kept in software caught by the read-back; ipsec_packet refused while it is bound;
#             unbound -> ipsec_packet -> bound: the packet SA offloaded to it, changed=false again
#   outputs   the sim's devlink -j (eswitch, flow_steering_mode, VF port function), ip xfrm state/policy
#             (packet offload) and ethtool -S/-i outputs, captured on lab1 and read by the collection's
#             parsers beside the unit tests' mlx5 fixtures (tests/unit/test_sim_cross_check.py)
#   teardown  (both VMs) the suite's SAs and policies (if a failed play left any), the netdevsim device, the kernel modules
#             this run loaded; the host's netdevs and devlink devices must be as before
# Prints a report with timings; exit status 0 only if every step passed.
#
#   bash lab/device.sh                    # LAB_KEEP=1 leaves the pair running
#   LAB_DEVICE_PARTS="sriov eswitch" bash lab/device.sh   # only these parts (setup and teardown always;
#                                         # default: sriov eswitch xfrm packet datapath vf outputs)
#
# Its own lab pair (LAB_RUN=lab/run/device, SSH 2261/2262, link 4441; LAB_RUN, LAB_SSH_PORT1/2 and
# LAB_LINK_PORT override them); a running pair with the same settings is reused. The lab's netdevsim
# is the simulated ConnectX of lab/sim (docs/lab-sim.md): lab/sim/ipsec.c (mlx5's xfrm offload rules:
# crypto and packet offload of SAs and policies, ESN, 128/256-bit keys, an IPv4 transport-mode data
# path) and lab/sim/devlink.c (flow_steering_mode, encap mode, VF ipsec_crypto/ipsec_packet, the
# eswitch held by IPsec objects; VF "binding" is the sim's debugfs knob sim_vf_bound, netdevsim VFs
# have no PCI function). No inline mode, no offloaded TC flows.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair device 2261 2262 4441
NSIM_ID=1
NSIM=/sys/bus/netdevsim/devices/netdevsim$NSIM_ID
SPIS="192.0.2.2:0x0000d000 192.0.2.2:0x0000d020 192.0.2.2:0x0000d021 192.0.2.2:0x0000d022 192.0.2.2:0x0000d030 192.0.2.2:0x0000d031 192.0.2.2:0x0000d032 192.0.2.1:0x0000d001 192.0.2.3:0x0000d002 192.0.2.4:0x0000d010 192.0.2.1:0x0000d011 198.51.100.2:0x0000d021 198.51.100.1:0x0000d022"   # dst:spi of the suite's SAs (xfrm.yml)
SUITE_ADDRS=(192.0.2.1 192.0.2.4 192.0.2.5 198.51.100.1 198.51.100.2)   # the packet part's policies are among these

report_init "lab device-layer report (netdevsim)"
T0=$(now)
lab_start
record "lab1 kernel / iproute2" "$(on 1 'uname -r; ip -V' | xargs)"

# ---- setup: netdevsim device, modules (only those missing are loaded and later unloaded)
# shellcheck disable=SC2016 # expanded on the VM
SETUP='set -eu
[ ! -e '$NSIM' ] || { echo "netdevsim'$NSIM_ID' exists already (left by an earlier run?): lab.sh down with LAB_RUN='$RUN', or echo '$NSIM_ID' > /sys/bus/netdevsim/del_device" >&2; exit 3; }
ls /sys/class/net | xargs > /run/device-suite.netdevs
devlink dev > /run/device-suite.devlink
: > /run/device-suite.modules
for m in netdevsim esp4 esp4_offload xfrm_user; do
	grep -q "^$m " /proc/modules && continue
	modprobe "$m"
	if grep -q "^$m " /proc/modules; then echo "$m" >> /run/device-suite.modules; fi
done
echo "'$NSIM_ID' 1" > /sys/bus/netdevsim/new_device
for i in $(seq 50); do [ -n "$(ls '$NSIM'/net 2>/dev/null)" ] && break; sleep 0.1; done
up=$(ls '$NSIM'/net)
ip link set dev "$up" up
echo "$up"'
for n in 1 2; do # lab2 only for the datapath part (traffic between the two simulated NICs)
	t=$(now)
	if ! UPLINK=$(on "$n" "$SETUP"); then bad "setup lab$n: netdevsim device" "see above"; exit 1; fi
	record "setup lab$n: netdevsim/netdevsim$NSIM_ID, uplink netdev $UPLINK" "modules loaded: $(on "$n" 'xargs < /run/device-suite.modules') ($(elapsed "$t") s)"
done

# ---- the three playbooks; each CHECK task is one line of the report
checks() { # checks LOG: "CHECK name" -> ok|FAIL, from the default callback's output
	awk '/^TASK \[CHECK / {if (n != "") print n "\tFAIL (not run?)"; n = $0; sub(/^TASK \[CHECK /, "", n); sub(/\] \**$/, "", n); next}
		n != "" && /^ok: / {print n "\tok"; n = ""; next}
		n != "" && /^(fatal|failed): / {print n "\tFAIL"; n = ""; next}
		END {if (n != "") print n "\tFAIL (not finished)"}' "$1"
}
for part in ${LAB_DEVICE_PARTS:-sriov eswitch xfrm packet datapath vf}; do
	[ "$part" != outputs ] || continue # below, after the playbooks
	t=$(now) hosts=lab1
	[ "$part" = datapath ] && hosts=lab1,lab2
	rc=0; r=$(play "device-$part" "" "lab/device/$part.yml" -l "$hosts" -e "device_id=$NSIM_ID" -e "device_uplink=$UPLINK") || rc=$?
	n_ok=0 n_bad=0
	while IFS=$'\t' read -r name verdict; do
		if [ "$verdict" = ok ]; then record "  $name" "ok"; n_ok=$((n_ok + 1))
		else bad "  $name" "$verdict" || true; n_bad=$((n_bad + 1)); fi
	done < <(checks "$OUT/device-$part.log")
	if [ "$rc" = 0 ] && [ "$n_bad" = 0 ] && [ "$n_ok" -gt 0 ]; then
		record "$part: lab/device/$part.yml ($n_ok checks passed)" "$r ($(elapsed "$t") s)"
	else
		bad "$part: lab/device/$part.yml" "$r, $n_ok checks passed, $n_bad failed (log $OUT/device-$part.log)" || true
	fi
done

# ---- outputs: the sim's real outputs where the unit tests hold mlx5 fixtures, read by the collection's
# parsers beside those fixtures (tests/unit/test_sim_cross_check.py with IPSEC_SIM_OUTPUTS); the
# committed copies (tests/unit/fixtures/sim) are what the bare-host unit run checks
# shellcheck disable=SC2016 # expanded on the VM
OUTPUTS='set -eu
d=netdevsim/netdevsim'$NSIM_ID' up='$UPLINK' o=/run/sim-outputs
rm -rf $o; mkdir -p $o
echo 2 > '$NSIM'/sriov_numvfs
devlink dev param set $d name flow_steering_mode value dmfs cmode runtime
devlink dev eswitch set $d mode switchdev
devlink port function set $d/128 ipsec_packet enable
devlink -j dev eswitch show $d > $o/eswitch_switchdev.json
devlink -j dev param show $d name flow_steering_mode > $o/param_fsm_dmfs.json
devlink -j port show $d/128 > $o/port_show_vf0.json
devlink port function set $d/128 ipsec_packet disable
devlink dev eswitch set $d mode legacy
echo 0 > '$NSIM'/sriov_numvfs
devlink dev param set $d name flow_steering_mode value smfs cmode runtime
k=0x$(printf "%040d" 0)
ip -batch - <<B
xfrm state add src 203.0.113.1 dst 203.0.113.2 proto esp spi 0x0000d0f1 reqid 0x51c0d0f1 mode transport aead rfc4106(gcm(aes)) $k 128 flag esn replay-window 0 offload packet dev $up dir out
xfrm state add src 203.0.113.2 dst 203.0.113.1 proto esp spi 0x0000d0f2 reqid 0x51c0d0f2 mode transport aead rfc4106(gcm(aes)) $k 128 flag esn replay-window 64 offload packet dev $up dir in
xfrm policy add src 203.0.113.1/32 dst 203.0.113.2/32 dir out priority 100 tmpl src 203.0.113.1 dst 203.0.113.2 proto esp reqid 0x51c0d0f1 mode transport offload packet dev $up
xfrm policy add src 203.0.113.2/32 dst 203.0.113.1/32 dir in priority 100 tmpl src 203.0.113.2 dst 203.0.113.1 proto esp reqid 0x51c0d0f2 mode transport offload packet dev $up
B
ip xfrm state list src 203.0.113.1 > $o/xfrm_state_packet.txt
ip xfrm state list src 203.0.113.2 >> $o/xfrm_state_packet.txt
ip xfrm policy list src 203.0.113.1/32 > $o/xfrm_policy_packet.txt
ip xfrm policy list src 203.0.113.2/32 >> $o/xfrm_policy_packet.txt
ethtool -S $up > $o/ethtool_S.txt
ethtool -i $up > $o/ethtool_i.txt
ip xfrm policy delete src 203.0.113.1/32 dst 203.0.113.2/32 dir out
ip xfrm policy delete src 203.0.113.2/32 dst 203.0.113.1/32 dir in
ip xfrm state delete src 203.0.113.1 dst 203.0.113.2 proto esp spi 0x0000d0f1
ip xfrm state delete src 203.0.113.2 dst 203.0.113.1 proto esp spi 0x0000d0f2
cd $o && tar cf - .'
if [[ " ${LAB_DEVICE_PARTS:-outputs} " == *" outputs "* ]]; then
	t=$(now)
	rm -rf "$OUT/sim-outputs"; mkdir -p "$OUT/sim-outputs"
	if on 1 "$OUTPUTS" 2> "$OUT/sim-outputs.err" | tar -C "$OUT/sim-outputs" -xf -; then
		if r=$(IPSEC_SIM_OUTPUTS=$OUT/sim-outputs "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
			"$REPO_ROOT/tests/unit/test_sim_cross_check.py" 2>&1); then
			record "outputs: the sim's devlink/xfrm/ethtool outputs beside the unit tests' mlx5 fixtures" \
				"$(tail -n 1 <<< "$r") ($(elapsed "$t") s, $OUT/sim-outputs)"
		else
			printf '%s\n' "$r" > "$OUT/sim-cross-check.log"
			bad "outputs: the sim's outputs beside the mlx5 fixtures" "$(tail -n 1 <<< "$r") (log $OUT/sim-cross-check.log)" || true
		fi
	else
		bad "outputs: capture on lab1" "$(tail -n 3 "$OUT/sim-outputs.err" | xargs)" || true
	fi
fi

# ---- teardown: only what this suite made
# shellcheck disable=SC2016 # expanded on the VM
TEARDOWN='set -u
left=0
for s in '$SPIS'; do
	dst=${s%%:*} spi=${s#*:}
	if ip xfrm state get dst "$dst" proto esp spi "$spi" > /dev/null 2>&1; then
		ip xfrm state delete dst "$dst" proto esp spi "$spi"; left=$((left + 1))
	fi
done
echo "suite SAs left by the playbooks: $left"
for sel in "192.0.2.1/32 192.0.2.4/32 out" "192.0.2.4/32 192.0.2.1/32 in" "192.0.2.1/32 192.0.2.5/32 out" \
	"198.51.100.1/32 198.51.100.2/32 out" "198.51.100.2/32 198.51.100.1/32 in" "198.51.100.2/32 198.51.100.1/32 out" "198.51.100.1/32 198.51.100.2/32 in"; do
	set -- $sel
	ip xfrm policy deleteall src "$1" dst "$2" dir "$3" 2> /dev/null || true
done
# the VF netdev of part vf (its own device, netdevsim11), if a failed play left it
[ ! -e /sys/bus/netdevsim/devices/netdevsim11 ] || { echo 11 > /sys/bus/netdevsim/del_device; echo "VF NETDEV DEVICE LEFT BY THE PLAYBOOK (removed)"; }
echo '$NSIM_ID' > /sys/bus/netdevsim/del_device
for i in $(seq 50); do [ -e '$NSIM' ] || break; sleep 0.1; done
[ ! -e '$NSIM' ] && echo "device deleted" || echo "DEVICE STILL THERE"
mods=$(tac /run/device-suite.modules | xargs)
if [ -n "$mods" ]; then modprobe -r $mods && echo "modules unloaded: $mods" || echo "MODULES NOT UNLOADED: $mods"; fi
for m in $mods; do grep -q "^$m " /proc/modules && echo "MODULE STILL LOADED: $m"; done
[ "$(ls /sys/class/net | xargs)" = "$(cat /run/device-suite.netdevs)" ] && echo "netdevs as before" || echo "NETDEVS DIFFER: $(ls /sys/class/net | xargs)"
devlink dev | cmp -s - /run/device-suite.devlink && echo "devlink devices as before" || echo "DEVLINK DEVICES DIFFER"
rm -f /run/device-suite.netdevs /run/device-suite.devlink /run/device-suite.modules'
for n in 1 2; do
	t=$(now)
	# policies of the packet part (selectors among 192.0.2.1/.4/.5 and 198.51.100.1/.2): none may be
	# left either (counted with the collection's parser, lab/owned.py, before the teardown removes them)
	pols=$(on "$n" 'ip xfrm policy list' | python3 "$LAB_DIR/owned.py" sps --all --among "${SUITE_ADDRS[@]}")
	td="suite policies left by the playbooks: $pols"$'\n'$(on "$n" "$TEARDOWN" 2>&1) || true
	printf '%s\n' "$td" > "$OUT/teardown-lab$n.txt"
	sas=$(owned_sas "$n")
	record "teardown lab$n: SAs, netdevsim device, modules" "owned SAs now $sas ($(elapsed "$t") s)"
	while read -r line; do record "  teardown lab$n" "$line"; done <<< "$td"
	if grep -qE 'STILL|DIFFER|NOT UNLOADED|LEFT BY THE PLAYBOOK' <<< "$td" || ! grep -q 'SAs left by the playbooks: 0' <<< "$td" || ! grep -q 'policies left by the playbooks: 0' <<< "$td" || [ "$sas" != 0 ]; then
		bad "teardown lab$n: nothing of the suite left" "see $OUT/teardown-lab$n.txt" || true
	fi
done
record "total" "$(elapsed "$T0") s"
