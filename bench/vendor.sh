#!/usr/bin/env bash
# The vendor's own command sequence for a lab topology, as one script per host sent over SSH (both
# hosts in parallel), timed by bench/run.sh against playbooks/site.yml.  Written from the steps of
# NVIDIA's "IPsec Full Offload" page (../shared/reference/nvidia-mlnx-en-ipsec-full-offload.txt)
# with the lab's devices: PF = link0, VF = vf0, representor = vf0_rep.  Differences, all forced by
# the lab: offload none (no mlx5: the "offload packet dev ..." words are left out); the hardware
# steps (sriov_numvfs, unbind, devlink eswitch/steering/ipsec_packet, bind) are left out, as the
# collection's nic_prep does nothing in the lab inventories either; step 9's "ip xfrm state/policy
# flush" is left out (never flush); ifconfig is written as ip; each `ip xfrm state add` reads its
# line from standard input (`ip -batch -`, one process per command as in the vendor text) so the
# keys are never in an argv.  Keys are fresh random ones per run, sent inside the script on stdin.
#
#   vendor.sh vxlan|roce SSH_CONFIG        apply on lab1 and lab2
#   vendor.sh vxlan-undo|roce-undo SSH_CONFIG   remove what the script added (exact deletes; the
#                                          rest - ns0, tc qdiscs, MTU - is lab/lib.sh lab_reset's)
set -euo pipefail
what=$1 cfg=$2
key() { od -An -tx1 -N "$1" /dev/urandom | tr -d ' \n'; }

script() { # script TOPO ID: the script for labID on stdout
	local topo=$1 id=$2 peer=$((3 - $2))
	case $topo in
	vxlan)
		local L=192.168.100.$id R=192.168.100.$peer so si
		# lab1 sends with 0xb29ed314 and receives with 0xc35aa26e; lab2 the other way round
		if [ "$id" = 1 ]; then so=0xb29ed314 si=0xc35aa26e; else so=0xc35aa26e si=0xb29ed314; fi
		cat <<-EOF
			set -e
			ip link set dev link0 up
			ip link set dev link0 mtu 2000
			ip link set dev vf0_rep up
			ip netns add ns0
			ip link set dev vf0 netns ns0
			ip netns exec ns0 ip addr add 10.10.0.$id/16 dev vf0
			ip netns exec ns0 ip link set dev vf0 up
			ip -batch - <<'K'
			xfrm state add src $L dst $R proto esp spi $so reqid $so mode transport aead rfc4106(gcm(aes)) 0x@KOUT@ 128 sel src $L/32 dst $R/32 flag esn replay-window 64
			K
			ip -batch - <<'K'
			xfrm state add src $R dst $L proto esp spi $si reqid $si mode transport aead rfc4106(gcm(aes)) 0x@KIN@ 128 sel src $R/32 dst $L/32 flag esn replay-window 64
			K
			ip xfrm policy add src $L dst $R dir out tmpl src $L dst $R proto esp reqid $so mode transport priority 12
			ip xfrm policy add src $R dst $L dir in tmpl src $R dst $L proto esp reqid $si mode transport priority 12
			ovs-vsctl add-br br-ovs
			ovs-vsctl add-port br-ovs vf0_rep
			ovs-vsctl add-port br-ovs vxlan1 -- set interface vxlan1 type=vxlan options:local_ip=$L options:remote_ip=$R options:key=100 options:dst_port=4789
		EOF
		;;
	vxlan-undo)
		local L=192.168.100.$id R=192.168.100.$peer so si
		if [ "$id" = 1 ]; then so=0xb29ed314 si=0xc35aa26e; else so=0xc35aa26e si=0xb29ed314; fi
		cat <<-EOF
			ovs-vsctl --if-exists del-br br-ovs
			ip xfrm policy delete src $L/32 dst $R/32 dir out 2>/dev/null || true
			ip xfrm policy delete src $R/32 dst $L/32 dir in 2>/dev/null || true
			ip xfrm state delete src $L dst $R proto esp spi $so 2>/dev/null || true
			ip xfrm state delete src $R dst $L proto esp spi $si 2>/dev/null || true
		EOF
		;;
	roce)
		local L=192.168.10.$id R=192.168.10.$peer so si
		if [ "$id" = 1 ]; then so=1000 si=1001; else so=1001 si=1000; fi
		cat <<-EOF
			set -e
			tc qdisc add dev link0 ingress
			tc qdisc add dev vf0_rep ingress
			tc filter add dev link0 parent ffff: protocol 802.1q chain 0 flower vlan_id 10 vlan_ethtype 802.1q cvlan_id 5 action vlan pop action vlan pop action mirred egress redirect dev vf0_rep
			tc filter add dev vf0_rep parent ffff: protocol all chain 0 flower action vlan push protocol 802.1q id 5 action vlan push protocol 802.1q id 10 action mirred egress redirect dev link0
			ip link set dev link0 up
			ip netns add ns0
			ip link set dev vf0 netns ns0
			ip -n ns0 addr add $L/24 dev vf0
			ip -n ns0 link set dev vf0 up
			ip link set dev vf0_rep up
			ip -n ns0 -4 -batch - <<'K'
			xfrm state add src $L dst $R proto esp spi $so reqid $((so + 9000)) aead rfc4106(gcm(aes)) 0x@KOUT@ 128 mode transport sel src $L dst $R
			K
			ip -n ns0 -4 -batch - <<'K'
			xfrm state add src $R dst $L proto esp spi $si reqid $((si + 9000)) aead rfc4106(gcm(aes)) 0x@KIN@ 128 mode transport sel src $R dst $L
			K
			ip -n ns0 -4 xfrm policy add src $L dst $R dir out tmpl src $L dst $R proto esp reqid $((so + 9000)) mode transport
			ip -n ns0 -4 xfrm policy add src $R dst $L dir in tmpl src $R dst $L proto esp reqid $((si + 9000)) mode transport
			ip -n ns0 -4 xfrm policy add src $R dst $L dir fwd tmpl src $R dst $L proto esp reqid $((si + 9000)) mode transport
		EOF
		;;
	roce-undo) echo true ;; # everything is in ns0 and the ingress qdiscs: lab_reset removes both
	esac
}

case $what in
vxlan) K1=$(key 36) K2=$(key 36) ;;
roce) K1=$(key 20) K2=$(key 20) ;;
vxlan-undo | roce-undo) K1="" K2="" ;;
*) echo "usage: vendor.sh vxlan|roce|vxlan-undo|roce-undo SSH_CONFIG" >&2; exit 2 ;;
esac
pids=()
for id in 1 2; do
	# lab1's outbound key is lab2's inbound key and the other way round
	if [ "$id" = 1 ]; then ko=$K1 ki=$K2; else ko=$K2 ki=$K1; fi
	s=$(script "$what" "$id")
	s=${s//@KOUT@/$ko} # bash expansion and printf (a builtin): the keys are in no argv
	s=${s//@KIN@/$ki}
	printf '%s\n' "$s" | ssh -F "$cfg" "lab$id" bash -s &
	pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit "$rc"
