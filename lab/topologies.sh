#!/usr/bin/env bash
# Both topologies of the collection, end to end, on the lab pair (lab/lab.sh), one after the other:
#   vxlan  inventories/examples/lab-vxlan: PF (link0) tunnel endpoints 192.168.100.1/.2, IPsec transport
#          on udp/4789, OVS br-ovs with vxlan1 + vf0_rep, overlay 10.10.0.N/24 on vf0 (initial netns)
#   roce   inventories/examples/lab-roce: vf0 in ns0 with 192.168.10.N/24, IPsec on vf0 in ns0, QinQ
#          tc rules (vlan 10 / cvlan 5) between link0 and vf0_rep
# For each: lab reset -> site.yml --check --diff on the fresh pair -> site.yml converge ->
# second run (must be changed=0) -> --check --diff (changed=0; TOPO_CHECK_CONVERGED=0 skips it) -> traffic on the
# topology's path with a capture on the sender's link0 (only ESP; QinQ tags for roce) and owned-SA
# packet counters on both peers -> verify.yml -> teardown.yml -> nothing owned left -> lab reset.
# roce then adds RoCE v2 (Soft-RoCE, ibv_rc_pingpong via verify.yml -e verify_rdma=rxe) through the
# SAs with vf0 in the initial netns (rdma_rxe on 6.12 works only there: see roce_v2 below).
# Prints a report with timings; exit status 0 only if every step of every topology passed.
#
#   vxlan-sim  inventories/examples/lab-vxlan-sim: the VXLAN overlay with PACKET offload on the lab's
#          simulated ConnectX (lab/sim; lib.sh sim_up): nsim0 is the PF and tunnel endpoint
#          198.51.100.N with link0 as its wire, nic_prep sets dmfs + switchdev on
#          netdevsim/netdevsim1, the sim does ESP + AES-GCM; checks add its ethtool ipsec_tx/rx_pkts
#          rising on both hosts and every owned SA/policy in packet offload
#   roce-sim  inventories/examples/lab-roce-sim: RoCE over VF with PACKET offload on the VF's netdev
#          of the simulated ConnectX: lab/nic_prep.yml (the nic_prep role: dmfs while legacy, one VF,
#          switchdev, VF 0's ipsec_packet while it is unbound), then lib.sh sim_vf_bind (the VF's
#          netdev nsim0v0 attached to its representor nsim0pf0vf0: the sim's VFs have no PCI
#          function to bind), then the cycle above with nsim0v0 in ns0 and the QinQ tc rules on
#          nsim0 (the PF, link0 its wire) and the representor; checks add the VF netdev's ethtool
#          ipsec_tx/rx_pkts and every owned SA/policy in packet offload; then RoCE v2 as for roce
#   bash lab/topologies.sh                 # vxlan roce vxlan-sim roce-sim; TOPOLOGIES="roce-sim" (or "roce", ...) for one; LAB_KEEP=1 keeps the VMs
#
# Its own lab pair by default (LAB_RUN=lab/run/topo, SSH 2251/2252, link 4431), so it does not
# collide with lab/demo.sh or molecule; a running pair with the same settings is reused.
# Lab-only preparation (kernel modules, OVS without systemd, link0 promiscuous) is lab/prepare.yml;
# the lab reset (VF back to the initial netns, no address, down; link0 MTU 1500; ingress qdiscs
# and ns0 removed) is done here, over SSH: both exist only for the lab, never in the roles.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair topo 2251 2252 4431
OUT=$RUN/topologies
mkdir -p "$OUT"
TOPOLOGIES=${TOPOLOGIES:-vxlan roce vxlan-sim roce-sim}
for _t in $TOPOLOGIES; do
	case $_t in vxlan | roce | vxlan-sim | roce-sim) ;; *) die "TOPOLOGIES: unknown topology '$_t' (vxlan, roce, vxlan-sim, roce-sim)" ;; esac
done

report_init "lab topologies report"
T0=$(now)
lab_start

t=$(now)
if r=$(play prepare "" lab/prepare.yml); then record "lab/prepare.yml (modules, OVS, link0 promisc)" "$r ($(elapsed "$t") s)"
else bad "lab/prepare.yml" "$r"; exit 1; fi

topology() { # topology NAME: the whole cycle; returns non-zero at the first failed step
	local name=$1 inv ns="" t r b1 b2 a1 a2 wire esp clear nicdev="" nicns=""
	case $name in
		vxlan) inv=lab-vxlan ;;
		roce) inv=lab-roce ns=ns0 ;;
		vxlan-sim) inv=lab-vxlan-sim nicdev=$SIM_PF ;;
		roce-sim) inv=lab-roce-sim ns=ns0 nicdev=$SIM_VF nicns=ns0 ;;
		*) bad "$name" "unknown topology (vxlan|roce|vxlan-sim|roce-sim)"; return 1 ;;
	esac
	local T; T=$(now)
	lab_reset || return 1
	if [ -n "$nicdev" ]; then
		for n in 1 2; do
			r=$(sim_up "$n") || { bad "$name: lab$n simulated ConnectX" "sim_up failed"; return 1; }
			record "$name: lab$n simulated ConnectX $r" "$(on "$n" "ip -br addr show dev $r; devlink dev eswitch show netdevsim/netdevsim1" | xargs)"
		done
	fi
	if [ "$name" = roce-sim ]; then
		# the device first, as on a ConnectX: the nic_prep role (site.yml runs it again: no change),
		# then the VF's netdev appears as its driver binds (here: sim_vf_bind)
		t=$(now); r=$(play "$name-nic-prep" "$inv" lab/nic_prep.yml) || { bad "$name: lab/nic_prep.yml (the nic_prep role)" "$r (log $OUT/$name-nic-prep.log)"; return 1; }
		record "$name: lab/nic_prep.yml (dmfs, 1 VF, switchdev, VF 0 ipsec_packet)" "$r ($(elapsed "$t") s)"
		for n in 1 2; do
			r=$(sim_vf_bind "$n") || { bad "$name: lab$n VF 0 bound (sim_vf_bind)" "failed"; return 1; }
			record "$name: lab$n VF 0 bound: $r on $SIM_VF_REP; sim_state" "$(on "$n" "cat /sys/kernel/debug/netdevsim/netdevsim$SIM_ID/sim_state" | xargs)"
			on "$n" "grep -q '^vf0 crypto=0 packet=1 bound=1$' /sys/kernel/debug/netdevsim/netdevsim$SIM_ID/sim_state" \
				|| { bad "$name: lab$n VF 0 has ipsec_packet and is bound" "see sim_state above"; return 1; }
		done
	fi
	if [ -n "$nicdev" ]; then
		nic1=$(on 1 "ethtool -S $nicdev" | python3 "$LAB_DIR/owned.py" ethtool ipsec_tx_pkts ipsec_rx_pkts)
		nic2=$(on 2 "ethtool -S $nicdev" | python3 "$LAB_DIR/owned.py" ethtool ipsec_tx_pkts ipsec_rx_pkts)
	fi
	# keys first (check mode never writes the key store, and a pair without a key fails the derivation)
	t=$(now); r=$(play "$name-derive" "$inv" playbooks/derive.yml) || { bad "$name: derive.yml (key store)" "$r"; return 1; }
	record "$name: derive.yml (controller: pairs + key store)" "$r ($(elapsed "$t") s)"
	# check mode on the fresh pair: every change reported, none made (for roce the VF's namespace
	# does not exist yet: the xfrm modules report their objects as to be added, with a warning)
	t=$(now); r=$(play "$name-check" "$inv" playbooks/site.yml --check --diff) || { bad "$name: site.yml --check --diff (fresh pair)" "$r (log $OUT/$name-check.log)"; return 1; }
	[ "$(owned_sas 1)$(owned_sas 2)" = 00 ] || { bad "$name: check mode changed the hosts" "owned SAs exist"; return 1; }
	record "$name: site.yml --check --diff (fresh pair, no SA added)" "$r ($(elapsed "$t") s)"
	t=$(now); r=$(play "$name-converge" "$inv" playbooks/site.yml) || { bad "$name: site.yml converge" "$r (log $OUT/$name-converge.log)"; return 1; }
	record "$name: site.yml converge" "$r ($(elapsed "$t") s)"
	t=$(now); r=$(play "$name-idempotence" "$inv" playbooks/site.yml) || { bad "$name: site.yml second run" "$r"; return 1; }
	[ "$r" = "changed=0 failed=0" ] || { bad "$name: site.yml second run (must be changed=0)" "$r (log $OUT/$name-idempotence.log)"; return 1; }
	record "$name: site.yml second run (must be changed=0)" "$r ($(elapsed "$t") s)"
	if [ "${TOPO_CHECK_CONVERGED:-1}" != 0 ]; then
		t=$(now); r=$(play "$name-check-converged" "$inv" playbooks/site.yml --check --diff) || { bad "$name: site.yml --check --diff (converged)" "$r"; return 1; }
		[ "$r" = "changed=0 failed=0" ] || { bad "$name: site.yml --check --diff on the converged pair (must be changed=0)" "$r (log $OUT/$name-check-converged.log)"; return 1; }
		record "$name: site.yml --check --diff on the converged pair" "$r ($(elapsed "$t") s)"
	fi
	for n in 1 2; do record "$name: lab$n owned SAs / SPs${ns:+ in $ns}" "$(owned_sas "$n" "$ns") / $(owned_sps "$n" "$ns")"; done
	[ "${name%-sim}" = vxlan ] && record "$name: lab1 OVS" "$(on 1 'ovs-vsctl list-ports br-ovs | xargs') on br-ovs, vf0 $(on 1 'ip -br -4 addr show dev vf0' | awk '{print $3}')"
	[ "${name%-sim}" = roce ] && record "$name: lab1 owned tc rules (PF + representor)" "$(owned_tc 1)"

	# Traffic on the topology's path, captured on the sender's link0 (the receiver would show
	# decrypted packets once esp4_offload is loaded); counters of the owned SAs on both peers.
	b1=$(owned_packets 1 "$ns"); b2=$(owned_packets 2 "$ns")
	if [ "${name%-sim}" = vxlan ]; then
		# vf0 -> vf0_rep -> br-ovs -> vxlan1 -> udp/4789 -> ESP on link0 (vxlan-sim: the sim's
		# netdev does ESP and AES-GCM and puts the frame on link0, its wire)
		wire=$(on 1 'timeout 15 tcpdump -l -n -i link0 -c 8 ip 2>/dev/null & sleep 1; ping -c 4 -i 0.3 -W 2 10.10.0.2 >/dev/null || echo PINGFAIL; wait')
	else
		# ns0: vf0 -> vf0_rep -> tc push 5, push 10 -> link0 -> peer link0 -> tc pop, pop -> vf0_rep -> vf0
		wire=$(on 1 'timeout 15 tcpdump -l -e -n -i link0 -c 8 "vlan 10 and vlan 5 and ip" 2>/dev/null & sleep 1; ip netns exec ns0 ping -c 4 -i 0.3 -W 2 192.168.10.2 >/dev/null || echo PINGFAIL; wait')
	fi
	printf '%s\n' "$wire" > "$OUT/$name-wire.txt"
	a1=$(owned_packets 1 "$ns"); a2=$(owned_packets 2 "$ns")
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	eout=$(grep -c '192\.168\.10\.1 > 192\.168\.10\.2: ESP(spi=' <<< "$wire" || true)
	ein=$(grep -c '192\.168\.10\.2 > 192\.168\.10\.1: ESP(spi=' <<< "$wire" || true)
	clear=$(grep -E '^[0-9]{2}:[0-9]{2}:' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	if [ "${name%-sim}" = roce ]; then
		local tagged; tagged=$(grep 'ESP(spi=' <<< "$wire" | grep -c 'vlan 10, .*vlan 5, ' || true)
		record "$name: lab1 link0 (tcpdump -e): QinQ frames with ESP inside" "$tagged of $esp ESP frames carry vlan 10 + cvlan 5"
		if [ "$tagged" -lt 4 ] || [ "$tagged" != "$esp" ]; then bad "$name: QinQ on the wire" "see $OUT/$name-wire.txt"; return 1; fi
	fi
	record "$name: lab1 link0 capture (4 pings)" "$esp ESP, $clear other IPv4 packets$(grep -q PINGFAIL <<< "$wire" && echo ', PING FAILED')"
	{ [ "$esp" -ge 4 ] && [ "$clear" = 0 ] && ! grep -q PINGFAIL <<< "$wire"; } || { bad "$name: only ESP on the wire" "see $OUT/$name-wire.txt"; return 1; }
	record "$name: owned SA packets lab1 / lab2" "$b1 -> $a1 / $b2 -> $a2"
	if [ "$a1" -lt $((b1 + 8)) ] || [ "$a2" -lt $((b2 + 8)) ]; then
		bad "$name: SA counters rise on both peers" "by >= 8 (4 pings each way)"; return 1
	fi

	if [ -n "$nicdev" ]; then
		local n c pk
		for n in 1 2; do
			c=$(on "$n" "${nicns:+ip netns exec $nicns }ethtool -S $nicdev" | python3 "$LAB_DIR/owned.py" ethtool ipsec_tx_pkts ipsec_rx_pkts)
			pk=$(( $(on "$n" "ip ${nicns:+-n $nicns} xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" sas --all --offload "$nicdev:packet") \
				+ $(on "$n" "ip ${nicns:+-n $nicns} xfrm policy list" | python3 "$LAB_DIR/owned.py" sps --all --offload "$nicdev:packet") ))
			record "$name: lab$n $nicdev ethtool ipsec_tx/rx_pkts; SAs+SPs in packet offload" "$([ "$n" = 1 ] && echo "$nic1" || echo "$nic2") -> $c; $pk"
			local b=$nic1; [ "$n" = 2 ] && b=$nic2
			{ [ "${c%/*}" -ge $((${b%/*} + 4)) ] && [ "${c#*/}" -ge $((${b#*/} + 4)) ] && [ "$pk" -ge 4 ]; } \
				|| { bad "$name: lab$n NIC counters rise and SAs/policies are packet-offloaded" "see above"; return 1; }
		done
		r=$(on 1 "devlink -j dev param show $SIM_DEVLINK name flow_steering_mode; devlink dev eswitch show $SIM_DEVLINK" | tr -d '\n')
		record "$name: lab1 after nic_prep" "$r"
		{ grep -q '"value":"dmfs"' <<< "$r" && grep -q 'mode switchdev' <<< "$r"; } || { bad "$name: nic_prep (dmfs, switchdev)" "$r"; return 1; }
	fi
	t=$(now)
	# vxlan: the inventory's verify_target_override is the peer's overlay address (vf0)
	r=$(play "$name-verify" "$inv" playbooks/verify.yml -e verify_count=10) || true
	verify_table "$OUT/$name-verify.log" > "$OUT/$name-verify-summary.txt" || true
	while read -r line; do record "  $name verify" "$line"; done < "$OUT/$name-verify-summary.txt"
	case $r in *failed=0) record "$name: verify.yml (10 pings each way)" "$r ($(elapsed "$t") s)" ;;
		*) bad "$name: verify.yml" "$r (log $OUT/$name-verify.log)"; return 1 ;; esac

	t=$(now); r=$(play "$name-teardown" "$inv" playbooks/teardown.yml) || { bad "$name: teardown.yml" "$r (log $OUT/$name-teardown.log)"; return 1; }
	record "$name: teardown.yml" "$r ($(elapsed "$t") s)"
	local left=0 n s p
	for n in 1 2; do
		s=$(owned_sas "$n" "$ns"); p=$(owned_sps "$n" "$ns")
		if [ "${name%-sim}" = vxlan ]; then
			local br addr
			br=$(on "$n" 'ovs-vsctl br-exists br-ovs && echo present || echo absent')
			addr=$(on "$n" 'ip -br -4 addr show dev vf0' | awk '{print $3}')
			record "$name: lab$n after teardown: owned SAs/SPs, br-ovs, vf0 addr" "$s/$p, $br, ${addr:-none}"
			[ "$s$p" = 00 ] && [ "$br" = absent ] && [ -z "$addr" ] || left=1
		else
			local tcn; tcn=$(owned_tc "$n")
			record "$name: lab$n after teardown: owned SAs/SPs in ns0, tc rules" "$s/$p, $tcn"
			[ "$s$p$tcn" = 000 ] || left=1
		fi
	done
	[ "$left" = 0 ] || { bad "$name: teardown left owned objects" "see above"; return 1; }
	lab_reset || return 1
	if [ "${name%-sim}" = roce ]; then roce_v2 "$name" "$inv" || return 1; fi
	if [ -n "$nicdev" ]; then for n in 1 2; do sim_down "$n" || { bad "$name: lab$n sim removed" "ssh failed"; return 1; }; done; fi
	record "$name: total" "$(elapsed "$T") s"
}

# RoCE v2 (Soft-RoCE) through the topology's SAs. rdma_rxe of kernel 6.12 looks its routes up in
# init_net (rxe_find_route4: ip_route_output_key(&init_net, ...) with the netdev's ifindex) and has
# its udp/4791 socket only in init_net (rxe_net_ipv4_init), so an rxe link on vf0 inside ns0 is
# created but carries nothing ("rxe_find_route4: no route", ../shared/reference/samples/lab/rxe/).
# The closest honest setup: the same inventory with ipsec_namespace="" -- vf0 keeps its address and
# SAs in the initial netns, the QinQ tc path (vf0 -> vf0_rep -> push 5, push 10 -> link0) is the
# same -- and verify.yml -e verify_rdma=rxe: rxe_vf0 on both peers (made and removed by the verify
# role), ibv_rc_pingpong across, SA counters against the RoCE packet count, one table. Meanwhile
# lab1's link0 is captured: only ESP inside QinQ, no udp/4791 (RoCE) or other IPv4 in clear.
roce_v2() { # roce_v2 TOPOLOGY INVENTORY
	local t T r b1 b2 a1 a2 wire esp eout ein tagged roce other rp1 rp2 dropped L=$1 inv=$2
	T=$(now)
	t=$(now); r=$(play "$L-v2-converge" "$inv" playbooks/site.yml -e ipsec_namespace=) || { bad "$L v2: site.yml (the VF in the initial netns)" "$r (log $OUT/$L-v2-converge.log)"; return 1; }
	record "$L v2: site.yml with ipsec_namespace= (the VF in init_net)" "$r ($(elapsed "$t") s)"
	b1=$(owned_packets 1); b2=$(owned_packets 2)
	# shellcheck disable=SC2016 # expanded on the VM
	# every frame (no filter: a vlan filter missed the received QinQ frames), to a pcap with a large
	# buffer (decoding text on a loaded TCG guest drops frames), read back afterwards
	on 1 'rm -f /tmp/roce-wire.pcap; nohup timeout 900 tcpdump -B 16384 -n -i link0 -w /tmp/roce-wire.pcap > /tmp/roce-wire.err 2>&1 & echo $! > /tmp/roce-wire.pid' \
		|| { bad "$L v2: capture on lab1 link0" "could not start tcpdump"; return 1; }
	sleep 2
	t=$(now); r=$(play "$L-v2-verify" "$inv" playbooks/verify.yml -e ipsec_namespace= -e verify_rdma=rxe) || true
	# shellcheck disable=SC2016 # expanded on the VM
	wire=$(on 1 'sleep 1; kill -INT $(cat /tmp/roce-wire.pid) 2>/dev/null; sleep 2; tcpdump -r /tmp/roce-wire.pcap -e -n 2>/dev/null')
	printf '%s\n' "$wire" > "$OUT/$L-v2-wire.txt"
	dropped=$(on 1 'cat /tmp/roce-wire.err' | sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p')
	a1=$(owned_packets 1); a2=$(owned_packets 2)
	verify_table "$OUT/$L-v2-verify.log" > "$OUT/$L-v2-verify-summary.txt" || true
	while read -r line; do record "  $L v2 verify" "$line"; done < "$OUT/$L-v2-verify-summary.txt"
	case $r in *failed=0) record "$L v2: verify.yml -e verify_rdma=rxe (ibv_rc_pingpong)" "$r ($(elapsed "$t") s)" ;;
		*) bad "$L v2: verify.yml -e verify_rdma=rxe" "$r (log $OUT/$L-v2-verify.log)"; return 1 ;; esac
	grep -qE 'ibv_rc_pingpong +PASS$' "$OUT/$L-v2-verify-summary.txt" || { bad "$L v2: traffic method" "ibv_rc_pingpong did not run"; return 1; }
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	eout=$(grep -c '192\.168\.10\.1 > 192\.168\.10\.2: ESP(spi=' <<< "$wire" || true)
	ein=$(grep -c '192\.168\.10\.2 > 192\.168\.10\.1: ESP(spi=' <<< "$wire" || true)
	tagged=$(grep 'ESP(spi=' <<< "$wire" | grep -c 'vlan 10, .*vlan 5, ' || true)
	roce=$(grep -c '\.4791: ' <<< "$wire" || true)
	other=$(grep 'ethertype IPv4' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	# RoCE packets each peer's rxe_vf0 sent + received during verify.yml (from the table)
	local rs1 rr1
	read -r rs1 rr1 < <(sed -n 's/^lab1 .*RoCE packets sent\/received by [^:]*: \([0-9]*\)\/\([0-9]*\);.*/\1 \2/p' "$OUT/$L-v2-verify-summary.txt") || true
	rp1=$(( ${rs1:-0} + ${rr1:-0} ))
	rp2=$(sed -n 's/^lab2 .*RoCE packets sent\/received by [^:]*: \([0-9]*\)\/\([0-9]*\);.*/\1 \2/p' "$OUT/$L-v2-verify-summary.txt" | awk '{print $1 + $2}')
	record "$L v2: lab1 link0 capture during verify.yml" "$esp ESP frames ($eout out, $ein in; $tagged with vlan 10 + cvlan 5), $roce udp/4791 in clear, $other other IPv4, ${dropped:-?} dropped by the kernel"
	# every RoCE packet lab1 sent / received is an ESP frame out of / into its link0 (unless the capture dropped some)
	{ { [ "${dropped:-1}" != 0 ] || { [ "$eout" -ge "${rs1:-1}" ] && [ "$ein" -ge "${rr1:-1}" ]; }; } && [ "$esp" -gt 0 ] \
		&& [ "$tagged" = "$esp" ] && [ "$roce" = 0 ] && [ "$other" = 0 ]; } \
		|| { bad "$L v2: only ESP inside QinQ on the wire, >= the RoCE packets lab1 sent / received (${rs1:-?} / ${rr1:-?})" "see $OUT/$L-v2-wire.txt"; return 1; }
	record "$L v2: owned SA packets lab1 / lab2 (RoCE packets lab1 / lab2)" "$b1 -> $a1 / $b2 -> $a2 (${rp1:-?} / ${rp2:-?})"
	{ [ -n "$rp1" ] && [ -n "$rp2" ] && [ "$rp1" -gt 0 ] && [ $((a1 - b1)) -ge "$rp1" ] && [ $((a2 - b2)) -ge "$rp2" ]; } \
		|| { bad "$L v2: SA counters rise by >= the RoCE packet count on both peers" "see above"; return 1; }
	t=$(now); r=$(play "$L-v2-teardown" "$inv" playbooks/teardown.yml -e ipsec_namespace=) || { bad "$L v2: teardown.yml" "$r (log $OUT/$L-v2-teardown.log)"; return 1; }
	record "$L v2: teardown.yml (ipsec_namespace=)" "$r ($(elapsed "$t") s)"
	local n left=0 s p tcn rd
	for n in 1 2; do
		s=$(owned_sas "$n"); p=$(owned_sps "$n"); tcn=$(owned_tc "$n"); rd=$(on "$n" 'rdma link show | grep -c "^link" || true')
		record "$L v2: lab$n after teardown: owned SAs/SPs, tc rules, RDMA links" "$s/$p, $tcn, $rd"
		[ "$s$p$tcn$rd" = 0000 ] || left=1
	done
	[ "$left" = 0 ] || { bad "$L v2: teardown left objects" "see above"; return 1; }
	lab_reset || return 1
	record "$L v2: RoCE step total" "$(elapsed "$T") s"
}

for topo in $TOPOLOGIES; do
	if ! topology "$topo"; then
		# best effort: leave the pair clean for the next topology
		play "$topo-teardown-after-failure" "lab-$topo" playbooks/teardown.yml > /dev/null 2>&1 || true
		lab_reset > /dev/null 2>&1 || true
		case $topo in *-sim) for n in 1 2; do sim_down "$n" > /dev/null 2>&1 || true; done ;; esac
	fi
done
record "total" "$(elapsed "$T0") s"
