#!/usr/bin/env bash
# SA lifecycle acceptance suite on the lab pair (lab/lab.sh), one command: lost SAs are never
# re-installed with their old key/SPI, protected traffic is dropped (never sent in clear) until
# site.yml heals, and the heal is clean. Continuous ping both ways (per icmp_seq, as lab/rekey.sh)
# and a capture of the inter-VM link for the whole suite (LAB_LINK_PCAP: QEMU filter-dump on lab1,
# the VM that is never rebooted) run through:
#   a  delete   the owned SAs of lab1 deleted by hand (reqid 0x51c00000-0x51c0ffff only)  -> site.yml
#   b  linkdown lab1's offload netdev (nsim0) down (the kernel must flush the SAs offloaded to it,
#               and with packet offload the policies too; the guards stay), up again       -> site.yml
#   c  teardown playbooks/teardown.yml -e ipsec_teardown_keep_guards=true                 -> site.yml
#   d  reboot   lab.sh reboot 2 (same disk, new boot id; lab2's ping restarts once its
#               protected address is up)                                                 -> site.yml
# then one playbooks/rekey.yml under the pings (0 lost), then (dpu) molecule's lab_dpu scenario, written
# for real ConnectX/DPU hosts, unchanged against this pair (converge, idempotence, verify). A foreign SA + policy (reqid 0x100) planted
# on both VMs must survive everything (on lab2 until the reboot, then planted again).
# After every heal: both ways pass (0 lost from the heal to the stage's end); no lost key or SPI is
# installed again on either host (sha256 of each SA key computed ON the VM, SPIs before/after); the
# sender's and receiver's ends of each direction match (SPI + key hash); XfrmInStateSeqError
# unchanged; a further site.yml is changed=0. From the capture (lab/pcap_esp.py): no (SPI, ESP seq)
# twice, no lost SPI after its stage's heal, 0 packets of the protected flows in clear (any non-ESP
# IPv4 packet between the two hosts' addresses) in any segment. The stage boundaries are marker
# frames (Ethernet type 0x88b5, "LCMARK <stage>:<event>") sent by lab1 into the capture.
#
# The inventory ($OUT/inventory/hosts.yml) offloads SAs and policies to the netdevsim netdev nsim0
# of each VM. By default (LC_OFFLOAD=packet) that is the lab's simulated ConnectX (lab/sim,
# docs/lab-sim.md) with PACKET offload of SAs and policies, AES-256-GCM with ESN as on mlx5: link0 is
# its wire, the protected flow runs between its addresses 198.51.100.1 and .2, and the device does
# ESP and AES-GCM (the suite shows its ethtool ipsec_tx/rx_pkts rising); on link down the kernel
# flushes the SAs and the packet-offloaded policies, and the guards (never offloaded) stay.
# LC_OFFLOAD=crypto: crypto offload to nsim0 (128-bit keys, no ESN, what upstream netdevsim took),
# traffic between the link0 addresses, so the kernel processes these SAs in software (the offload dev
# is not the route's dev); LC_OFFLOAD=none: software SAs (b is then moot).
#
#   bash lab/lifecycle.sh        # LC_STAGES="a b c d rekey dpu" (default all), LC_PING_INTERVAL=0.02,
#                                # LC_GAP=5 (s of traffic while an SA is lost), LAB_KEEP=1 keeps the VMs
# Exit status 0 only if every check passed. Figures: $OUT/figures.txt (printed at the end).
# Own lab pair (LAB_RUN=lab/run/lifecycle, SSH 2311/2312, link 4491), always booted fresh (the
# capture must cover the whole suite).
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair lifecycle 2311 2312 4491
STAGES=${LC_STAGES:-a b c d rekey dpu}
INTERVAL=${LC_PING_INTERVAL:-0.02}
GAP=${LC_GAP:-5}
OFFLOAD=${LC_OFFLOAD:-packet}
[[ $INTERVAL =~ ^0?\.[0-9]+$|^[1-9]$ ]] || die "LC_PING_INTERVAL must be a number of seconds (got '$INTERVAL')"
[[ $GAP =~ ^[0-9]+$ ]] || die "LC_GAP must be a number of seconds"
[[ $OFFLOAD =~ ^(packet|crypto|none)$ ]] || die "LC_OFFLOAD must be packet, crypto or none"
for s in $STAGES; do [[ $s =~ ^(a|b|c|d|rekey|dpu)$ ]] || die "LC_STAGES: unknown stage '$s' (a b c d rekey dpu)"; done
[[ " $STAGES " != *" dpu "* ]] || [ "$OFFLOAD" = packet ] || die "LC_STAGES: dpu needs LC_OFFLOAD=packet (lab_dpu checks packet offload)"
export LAB_LINK_PCAP=$OUT/link.pcap
IP1=192.168.100.1 IP2=192.168.100.2
# packet: the simulated ConnectX carries the traffic (its own addresses, link0 as its wire)
[ "$OFFLOAD" != packet ] || { IP1=198.51.100.1 IP2=198.51.100.2; }
NSIM=nsim0
INVDIR=$OUT/inventory
STORE=$RUN/keystore-lifecycle.yml
VPY=$VENV/bin/python # (PY is common.sh's interpreter for the venv)

soft() { bad "$@" || true; } # record a failure, carry on
on() { on_patient "$@"; } # lib.sh: a failed ssh connection is retried
on_in() { local n=$1; shift; ssh -F "$RUN/ssh_config" -o ConnectTimeout=60 "lab$n" "$@"; } # stdin passed on

report_init "lab SA lifecycle report"
T0=$(now)

# --- 0. the capture parser's own test --------------------------------------------------------------
venv_need "$REPO_ROOT/tests/requirements.txt"
t=$(now)
if r=$("$VPY" -m pytest -q -p no:cacheprovider "$REPO_ROOT/tests/lab/test_pcap_esp.py" 2>&1 | tail -n 1); then
	record "lab/pcap_esp.py unit test" "$r ($(elapsed "$t") s)"
else
	bad "lab/pcap_esp.py unit test" "$r"; exit 1
fi

# --- 1. a fresh pair with the capture, netdevsim, inventory ------------------------------------------
bash "$LAB_DIR/lab.sh" down > /dev/null 2>&1 || true
rm -f "$LAB_LINK_PCAP" "$STORE"
lab_start
[ -s "$LAB_LINK_PCAP" ] || { bad "link capture" "$LAB_LINK_PCAP not written by QEMU"; exit 1; }
record "link capture (filter-dump on lab1's link netdev)" "$LAB_LINK_PCAP"

# shellcheck disable=SC2016 # expanded on the VM
NSIM_UP='set -e
for m in netdevsim esp4 esp4_offload xfrm_user; do [ -d /sys/module/$m ] || modprobe $m; done
d=/sys/bus/netdevsim/devices/netdevsim1
[ -e $d ] || echo "1 1" > /sys/bus/netdevsim/new_device
for i in $(seq 50); do [ -n "$(ls $d/net 2>/dev/null)" ] && break; sleep 0.1; done
n=$(ls $d/net)
[ "$n" = '$NSIM' ] || ip link set dev "$n" name '$NSIM'
ip link set dev '$NSIM' up
echo "$(ethtool -k '$NSIM' | grep -E "^esp-hw-offload" | xargs)"'
# packet: link0 becomes the simulated NIC's wire (docs/lab-sim.md), the NIC keeps one MAC across
# reboots (as a real one: the peer's neighbour entry stays right) and has its address, as a host's
# network configuration would give it at boot
# shellcheck disable=SC2016 # expanded on the VM
SIM_WIRE='set -e
n=$(hostname | tr -dc 0-9)
ip link set dev link0 promisc on
sysctl -qw net.ipv4.conf.link0.arp_ignore=1
echo link0 > /sys/kernel/debug/netdevsim/netdevsim1/ports/0/sim_lower
ip link set dev '$NSIM' down
ip link set dev '$NSIM' address 02:00:c6:33:64:0$n
ip link set dev '$NSIM' up
ip addr replace 198.51.100.$n/24 dev '$NSIM'
echo "wire $(cat /sys/kernel/debug/netdevsim/netdevsim1/ports/0/sim_lower), $(ip -br addr show dev '$NSIM' | xargs)"'
nsim_up() {
	on "$1" "$NSIM_UP" || return 1
	[ "$OFFLOAD" != packet ] || on "$1" "$SIM_WIRE"
}
for n in 1 2; do
	r=$(nsim_up "$n") || { bad "lab$n netdevsim" "setup failed"; exit 1; }
	record "lab$n netdevsim/netdevsim1 netdev $NSIM up" "$r"
done

write_inventory() {
	mkdir -p "$INVDIR"
	cat > "$INVDIR/hosts.yml" <<-EOF
	# Written by lab/lifecycle.sh: the lab pair, SAs offloaded ($OFFLOAD) to netdevsim ($NSIM).
	all:
	  children:
	    ipsec_lab:
	      hosts:
	        lab1:
	          ipsec_local_ip: $IP1
	        lab2:
	          ipsec_local_ip: $IP2
	      vars:
	        ipsec_meshes: [ipsec_lab]
	        ipsec_dev: $NSIM
	        ipsec_offload: $OFFLOAD
	        ipsec_mode: transport
	EOF
	# upstream netdevsim (crypto) took 128-bit keys without ESN; the simulated ConnectX takes
	# mlx5's AES-256 + ESN, the collection's defaults
	# (the simulated ConnectX is netdevsim to the preflight, which accepts mlx5_core by default)
	if [ "$OFFLOAD" = packet ]; then printf '        ipsec_packet_offload_drivers: [mlx5_core, netdevsim]\n' >> "$INVDIR/hosts.yml"
	else printf '        ipsec_key_bits: 128\n        ipsec_esn: false\n' >> "$INVDIR/hosts.yml"; fi
}
lplay() { # lplay NAME PLAYBOOK [ARGS..]: like lib.sh's play, with this suite's inventory
	local name=$1 pb=$2 rc=0 log; shift 2
	log="$OUT/$name.log"
	ansible-playbook -i "$RUN/inventory.yml" -i "$INVDIR/hosts.yml" -e "ipsec_keystore_path=$STORE" \
		"$REPO_ROOT/$pb" "$@" > "$log" 2>&1 || rc=$?
	awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]}} END{printf "changed=%d failed=%d", c, f}' "$log"
	if [ "$rc" != 0 ]; then grep -E '^(fatal|failed):|"msg":' "$log" | cut -c1-400 | head -n 6 >&2; fi
	return "$rc"
}

# --- helpers: SAs with key hashes (computed on the VM), foreign objects, counters, markers -----------
# One line per SA: "src>dst spi reqid sha256(key)" (owned: reqid in the range; foreign lines start
# with "F "). lab/sa_keys.py runs on the VM behind the collection's _xfrm_text.py: the key is read
# from `ip xfrm state` there and only its hash leaves.
sa_keys() { cat "$REPO_ROOT/plugins/module_utils/_xfrm_text.py" "$LAB_DIR/sa_keys.py" | on_in "$1" python3 -; }
sas() { sa_keys "$1" | grep -v '^F ' | sort || true; }
foreign_sas() { sa_keys "$1" | grep '^F ' | sort || true; }
spis_of() { awk '{print $2}' <<< "$1" | xargs; }
short() { awk '{printf "%s:%s ", $2, substr($4, 1, 8)}' <<< "$1" | sed 's/ $//'; }

# a foreign SA + policy (reqid 0x100, SPI 0xabc, to 10.99.0.1; key from the VM's urandom, on stdin)
plant_foreign() {
	local me=192.168.100.$1
	# shellcheck disable=SC2087 # $me expands here, \$k on the VM
	on_in "$1" bash -s <<-EOF
		set -e
		k=\$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
		ip -batch - <<B
		xfrm state add src $me dst 10.99.0.1 proto esp spi 0x00000abc reqid 0x100 mode transport aead rfc4106(gcm(aes)) 0x\$k 128 sel src $me/32 dst 10.99.0.1/32
		xfrm policy add src $me/32 dst 10.99.0.1/32 dir out priority 9 tmpl src $me dst 10.99.0.1 proto esp reqid 0x100 mode transport
		B
	EOF
}
declare -A FOREIGN=()
foreign_snapshot() { # the foreign SA line (with its key hash) + the foreign policy's lines
	printf '%s\n' "$(foreign_sas "$1")"
	on "$1" "ip xfrm policy list src 192.168.100.$1/32 dst 10.99.0.1/32"
}
FOREIGN_BAD=0
foreign_check() { # foreign_check N WHEN
	local now_s
	now_s=$(foreign_snapshot "$1")
	if [ "$now_s" != "${FOREIGN[$1]}" ]; then
		soft "foreign SA + policy on lab$1 intact ($2)" "changed: $(tr '\n' ' ' <<< "$now_s" | cut -c1-160)"
		FOREIGN_BAD=$((FOREIGN_BAD + 1))
		return 1
	fi
}
seqerr() { on "$1" "cat /proc/net/xfrm_stat" | python3 "$LAB_DIR/owned.py" xfrm-stat XfrmInStateSeqError; }
xstat() { on "$1" "cat /proc/net/xfrm_stat"; }
# read with the collection's parsers (lab/owned.py): the guards (owned, action block, mark mask 0x1);
# the policies / SAs offloaded to the sim in packet mode; the SAs offloaded to it in any mode
guards() { on "$1" "ip xfrm policy list" | python3 "$LAB_DIR/owned.py" guards; }
pkt_sps() { on "$1" "ip xfrm policy list" | python3 "$LAB_DIR/owned.py" sps --all --offload "$NSIM:packet"; }
pkt_sas() { on "$1" "ip xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" sas --all --offload "$NSIM:packet"; }
off_sas() { on "$1" "ip xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" sas --all --offload "$NSIM"; }
# the simulated NIC's ethtool -S ipsec counters: "tx=P rx=P txdrop=P rxdrop=P"
simctr() {
	local tx rx txd rxd
	IFS=/ read -r tx rx txd rxd < <(on "$1" "ethtool -S $NSIM" \
		| python3 "$LAB_DIR/owned.py" ethtool ipsec_tx_pkts ipsec_rx_pkts ipsec_tx_drop_pkts ipsec_rx_drop_pkts)
	echo "tx=$tx rx=$rx txdrop=$txd rxdrop=$rxd"
}
# a marker frame into the capture (sent by lab1 on link0), its VM time on both hosts into boundaries.txt
MARK_PY='import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("link0", 0))
mac = open("/sys/class/net/link0/address").read().strip()
s.send(b"\xff" * 6 + bytes.fromhex(mac.replace(":", "")) + b"\x88\xb5" + b"LCMARK " + sys.argv[1].encode() + b"\x00" * 32)
print("%.6f" % time.time())'
mark() { # mark LABEL
	local t1 t2
	t1=$(on_in 1 python3 - "$1" <<< "$MARK_PY") || { soft "marker $1" "not sent"; return 0; }
	t2=$(on 2 'date +%s.%N' 2> /dev/null || echo 0)
	echo "$1 $t1 $t2" >> "$OUT/boundaries.txt"
}
bound() { awk -v l="$1" -v c="$2" '$1 == l {print $c}' "$OUT/boundaries.txt" | tail -n 1; } # bound LABEL 2|3

PING_FILES1=() PING_FILES2=()
ping_start() { # ping_start N: ping -D -O the peer every INTERVAL s (-O: a line per unanswered seq)
	local peer=$IP2 me=$IP1; [ "$1" = 2 ] && peer=$IP1 me=$IP2
	# -I the own address: without it ping connect()s a probe socket to find its source, and on a host
	# whose guards are the only policies (a rebooted VM before site.yml) that connect fails with
	# EPERM ("ping: connect: Operation not permitted": the block policy) and ping exits at once;
	# with it every send is refused the same way but ping goes on, one unanswered seq per interval
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" "rm -f /tmp/lc-ping.out; nohup ping -D -O -I $me -i $INTERVAL $peer > /tmp/lc-ping.out 2>&1 & echo \$! > /tmp/lc-ping.pid"
}
ping_stop() { # ping_stop N FILE: stop (SIGINT: summary line) and fetch the output
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'kill -INT "$(cat /tmp/lc-ping.pid)"; sleep 1; cat /tmp/lc-ping.out' > "$2"
	if [ "$1" = 1 ]; then PING_FILES1+=("$2"); else PING_FILES2+=("$2"); fi
}
ping_fetch() { on "$1" 'cat /tmp/lc-ping.out' > "$2"; } # while it runs
# ping_window FILE T0 T1 -> "sent received lost" for the seqs whose time (reply, or the
# "no answer yet" line ping -O prints one interval later) is within [T0, T1] (VM clock)
ping_window() {
	awk -v a="$2" -v b="$3" '
		/icmp_seq=/ {
			ts = $1; gsub(/[][]/, "", ts)
			split($0, x, "icmp_seq="); split(x[2], y, " "); q = y[1] + 65536 * wrap
			if (q < hi - 32768) { wrap++; q += 65536 }
			if (q > hi) hi = q
			if ($0 ~ /no answer yet/) { if (!(q in na)) na[q] = ts + 0 }
			else if ($0 ~ /bytes from/ && !(q in rx)) rx[q] = ts + 0
		}
		END {
			last = 0
			for (s = 1; s <= hi; s++) {
				if (s in rx) t = rx[s]; else if (s in na) t = na[s]; else t = last
				last = t
				if (t >= a && t <= b) { sent++; if (s in rx) got++ }
			}
			printf "%d %d %d\n", sent, got, sent - got
		}' "$1"
}

# --- 2. converge, foreign objects, pings --------------------------------------------------------------
for n in 1 2; do plant_foreign "$n" || { bad "lab$n foreign SA + policy" "ip -batch failed"; exit 1; }; done
for n in 1 2; do FOREIGN[$n]=$(foreign_snapshot "$n"); done
record "foreign SA (spi 0xabc, reqid 0x100) + policy planted on lab1 / lab2" "key hashes $(awk '{print substr($5, 1, 8)}' <<< "${FOREIGN[1]}" | head -n 1) / $(awk '{print substr($5, 1, 8)}' <<< "${FOREIGN[2]}" | head -n 1)"
write_inventory
# if the converge fails: the kernel's word on an ESN SA with offload crypto dev nsim0 (what an
# inventory without ipsec_esn false derives): added by hand on lab1 with a key generated there
# (SPI 0xfffe, deleted again)
# shellcheck disable=SC2016 # expanded on the VM
ESN_PROBE='k=$(od -An -tx1 -N20 /dev/urandom | tr -d " \n")
printf "xfrm state add src '$IP1' dst '$IP2' proto esp spi 0x0000fffe reqid 0x51c0fffe mode transport flag esn aead rfc4106(gcm(aes)) 0x%s 128 offload crypto dev '$NSIM' dir out\n" "$k" | ip -batch - 2>&1
ip xfrm state delete src '$IP1' dst '$IP2' proto esp spi 0x0000fffe 2>/dev/null; true'
t=$(now)
if ! r=$(lplay converge playbooks/site.yml); then
	soft "site.yml converge (ipsec_offload $OFFLOAD on $NSIM)" "$r (log $OUT/converge.log)"
	record "  failed task(s)" "$(grep -B 6 '^fatal:' "$OUT/converge.log" | grep -oE '^TASK \[[^]]*\]|- name: .*' | sort -u | tr '\n' ' ' | cut -c1-150)"
	[ "$OFFLOAD" = crypto ] || exit 1
	probe=$(on 1 "$ESN_PROBE" | head -n 2 | tr "\n" " ")
	record "  the kernel on an ESN SA with offload crypto dev $NSIM" "${probe:-accepted (no error)}"
	# carry on with software SAs, so that every other check still runs (the run stays FAIL)
	OFFLOAD=none
	write_inventory
	record "  falling back to ipsec_offload none for the remaining stages" "(stage b cannot show the flush then)"
	t=$(now)
	r=$(lplay converge-none playbooks/site.yml) || { bad "site.yml converge (ipsec_offload none)" "$r (log $OUT/converge-none.log)"; exit 1; }
fi
record "site.yml converge (ipsec_offload $OFFLOAD, dev $NSIM)" "$r ($(elapsed "$t") s)"
for n in 1 2; do foreign_check "$n" "after the converge" || true; done

declare -A LOSTH=() LOSTS=() # every key hash / SPI lost so far (cumulative) -> the stage it was lost in
S1=$(sas 1); S2=$(sas 2)
record "owned SAs lab1 / lab2 (spi:keyhash)" "$(short "$S1") / $(short "$S2")"
off_lines=$(off_sas 1)
record "lab1 SAs with 'crypto offload parameters: dev $NSIM'" "$off_lines"
[ "$OFFLOAD" = none ] || [ "$off_lines" -ge 2 ] || soft "SAs offloaded to $NSIM" "$off_lines SA(s) show the offload line"
if [ "$OFFLOAD" = packet ]; then
	for n in 1 2; do
		ps=$(pkt_sps "$n"); pa=$(pkt_sas "$n")
		record "lab$n: SAs / policies with offload packet on $NSIM; guards" "$pa / $ps; $(guards "$n")"
		{ [ "$pa" -ge 2 ] && [ "$ps" -ge 2 ] && [ "$(guards "$n")" -ge 2 ]; } || soft "lab$n: SAs and SA policies packet-offloaded, guards beside them" "$pa SAs, $ps policies, $(guards "$n") guards"
	done
fi

mark "start"
for n in 1 2; do ping_start "$n"; done
sleep 4
for n in 1 2; do
	ping_fetch "$n" "$OUT/ping-probe-lab$n.txt"
	rx=$(grep -c 'bytes from' "$OUT/ping-probe-lab$n.txt" || true)
	p=$(owned_packets "$n")
	dbg=$(on "$n" "head -n 1 /sys/kernel/debug/netdevsim/netdevsim1/ports/0/ipsec 2>/dev/null" || true)
	record "lab$n: pings answered in 4 s / owned SA packets / netdevsim debugfs" "$rx / $p / ${dbg:-none}"
	{ [ "$rx" -gt 0 ] && [ "$p" -gt 0 ]; } || soft "lab$n pings flow over ESP" "$rx replies, $p SA packets"
	if [ "$OFFLOAD" = packet ]; then
		c=$(simctr "$n")
		record "lab$n: the simulated NIC's ethtool -S ipsec counters" "$c"
		{ [[ " $c" =~ \ tx=[1-9] ]] && [[ " $c" =~ \ rx=[1-9] ]]; } || soft "lab$n: ESP done by the simulated NIC (ipsec_tx/rx_pkts > 0)" "$c"
	fi
done
if [ "$OFFLOAD" = packet ]; then
	record "  (traffic runs on $NSIM with link0 as its wire: the simulated NIC does ESP + AES-GCM, packet offload)" ""
else
	record "  (traffic runs on link0; SAs offloaded to $NSIM are processed in software: debugfs tx stays 0)" ""
fi

# --- 3. the stages -----------------------------------------------------------------------------------
declare -a ROWS=()
LOST_LABELS=()  # --lost LABEL=SPIS arguments for pcap_esp.py
REBOOTED=0
stage_run() { # stage_run X DESCRIPTION
	local x=$1 what=$2 b1 b2 a1 a2 l1 l2 lost_h lost_s h1 h2 e1 e2 t r line reuse="" keys="ok" chg="?" trf="?" seqe="ok"
	local kfl="-" ok=1 before_fail=$FAILED
	b1=$(sas 1); b2=$(sas 2)
	e1=$(seqerr 1); e2=$(seqerr 2)
	xstat 1 > "$OUT/xfrm_stat-$x-before-lab1.txt"; xstat 2 > "$OUT/xfrm_stat-$x-before-lab2.txt"
	mark "$x:start"
	t=$(now)
	case $x in
		a)
			on 1 'ip xfrm state list nokeys' | python3 "$LAB_DIR/owned.py" deletes | on_in 1 ip -force -batch - \
				|| soft "a: delete lab1's owned SAs" "ip failed"
			;;
		b)
			on 1 "ip link set dev $NSIM down" || soft "b: $NSIM down" "ip failed"
			kfl=$(owned_sas 1)
			record "b: lab1 owned SAs after $NSIM down (kernel flush: must be 0)" "$kfl (before: $(wc -l <<< "$b1"))"
			if [ "$OFFLOAD" = none ]; then record "b: (LC_OFFLOAD=none: no SA offloaded, nothing to flush)" ""
			elif [ "$kfl" != 0 ]; then soft "b: the kernel flushed the SAs offloaded to $NSIM" "$kfl owned SAs left on lab1"; fi
			if [ "$OFFLOAD" = packet ]; then # the core flushes packet-offloaded policies too; the guards stay
				local pp g; pp=$(pkt_sps 1); g=$(guards 1)
				record "b: lab1 packet-offloaded policies / guards after $NSIM down (must be 0 / 4)" "$pp / $g"
				{ [ "$pp" = 0 ] && [ "$g" -ge 2 ]; } || soft "b: the kernel flushed the packet-offloaded policies, the guards stayed" "$pp policies, $g guards"
			fi
			sleep 1
			on 1 "ip link set dev $NSIM up" || soft "b: $NSIM up" "ip failed"
			;;
		c)
			r=$(lplay "c-teardown" playbooks/teardown.yml -e ipsec_teardown_keep_guards=true) \
				|| soft "c: teardown.yml keep_guards" "$r (log $OUT/c-teardown.log)"
			record "c: teardown.yml -e ipsec_teardown_keep_guards=true" "$r ($(elapsed "$t") s)"
			;;
		d)
			ping_stop 2 "$OUT/ping-lab2-before-reboot.txt"
			r=$(bash "$LAB_DIR/lab.sh" reboot 2 2>&1 | tail -n 1) || { soft "d: lab.sh reboot 2" "$r"; }
			# packet: the protected flow's address is the simulated NIC's (set up below, as the NIC and
			# the network configuration would appear at boot): the ping starts once it exists
			[ "$OFFLOAD" = packet ] || ping_start 2
			REBOOTED=1
			record "d: lab.sh reboot 2" "${r#== } ($(elapsed "$t") s)"
			on 2 'test -x /usr/local/sbin/ipsec-offload-mlx5-guards' && g=present || g=absent
			record "d: lab2 after boot: guard policies / owned SAs / boot guard script" "$(guards 2) / $(owned_sas 2) / $g"
			[ "$(guards 2)" -gt 0 ] || soft "d: lab2 guards active at boot (before site.yml)" "no 'action block' policy on lab2 after the reboot"
			r=$(nsim_up 2) || soft "d: lab2 netdevsim after the reboot" "setup failed"
			[ "$OFFLOAD" != packet ] || { record "d: lab2 simulated NIC after the boot" "$(tail -n 1 <<< "$r")"; ping_start 2; }
			e2=$(seqerr 2)
			xstat 2 > "$OUT/xfrm_stat-$x-before-lab2.txt"
			;;
	esac
	mark "$x:lost"
	a1=$(sas 1); a2=$(sas 2)
	# lost = SA instances present on a host before and gone from it after (one end of a direction is
	# enough: that key and SPI must never serve again, on either host)
	local gone
	gone=$( { comm -23 <(awk 'NF' <<< "$b1" | sort) <(awk 'NF' <<< "$a1" | sort); comm -23 <(awk 'NF' <<< "$b2" | sort) <(awk 'NF' <<< "$a2" | sort); } )
	lost_h=$(awk 'NF {print $4}' <<< "$gone" | sort -u)
	lost_s=$(awk 'NF {print $2}' <<< "$gone" | sort -u)
	for h in $lost_h; do LOSTH[$h]=$x; done
	for s in $lost_s; do LOSTS[$s]=$x; done
	record "$x: $what: SAs lost (spi)" "$(xargs <<< "$lost_s") ; owned SAs now lab1 $(awk 'NF' <<< "$a1" | wc -l), lab2 $(awk 'NF' <<< "$a2" | wc -l); guards lab1 $(guards 1), lab2 $(guards 2)"
	[ -n "$lost_s" ] || soft "$x: the disruption lost SAs" "no SA gone"
	if [ "$x" = d ] && [ "$REBOOTED" = 1 ]; then # a reboot loses every SA: plant the foreign one again
		plant_foreign 2 || soft "d: foreign SA + policy planted again on lab2" "failed"
		FOREIGN[2]=$(foreign_snapshot 2)
	fi
	for n in 1 2; do foreign_check "$n" "$x, lost" || true; done
	sleep "$GAP" # protected traffic meets the lost SAs: dropped (guards, no SA), never in clear
	local th; th=$(now)
	r=$(lplay "$x-heal" playbooks/site.yml) || soft "$x: site.yml heal" "$r (log $OUT/$x-heal.log)"
	record "$x: site.yml heal" "$r ($(elapsed "$th") s)"
	awk '/^TASK \[Directions rotated/ {f = 1; next} /^TASK/ {f = 0} f && /^ *"/ {sub(/^ *"/, ""); sub(/",?$/, ""); print}' "$OUT/$x-heal.log" \
		| head -n 4 > "$OUT/$x-rotated.txt" || true
	while read -r line; do record "  $x: rotated" "${line:0:120}"; done < "$OUT/$x-rotated.txt"
	# after teardown.yml the keys were retired there already: site.yml installs the new generation
	# without a "rotated" report (the new SPIs/keys are checked below like every other stage's)
	[ -s "$OUT/$x-rotated.txt" ] || [ "$x" = c ] || soft "$x: site.yml reports the rotated directions" "no 'Directions rotated' output in $OUT/$x-heal.log"
	mark "$x:healed"
	LOST_LABELS+=("--lost" "$x:healed=$(xargs <<< "$lost_s" | tr ' ' ',')")
	h1=$(sas 1); h2=$(sas 2)
	# no lost key hash nor lost SPI again, on either host
	local sp kh
	for line in $(printf '%s\n%s\n' "$h1" "$h2" | awk 'NF {print $2 "/" $4}'); do
		sp=${line%/*} kh=${line#*/}
		if [ -n "${LOSTS[$sp]:-}" ]; then reuse+=" spi $sp (lost in ${LOSTS[$sp]})"; fi
		if [ -n "${LOSTH[$kh]:-}" ]; then reuse+=" key ${kh:0:8} (lost in ${LOSTH[$kh]})"; fi
	done
	[ -z "$reuse" ] || { keys="REUSED"; ok=0; soft "$x: no lost key/SPI installed again" "$reuse"; }
	# both ends of each direction: 2 SAs per host, sender's and receiver's spi + key hash equal
	if [ "$(awk 'NF' <<< "$h1" | wc -l)" != 2 ] || [ "$(awk 'NF' <<< "$h2" | wc -l)" != 2 ] \
		|| [ "$(awk '{print $1, $2, $4}' <<< "$h1")" != "$(awk '{print $1, $2, $4}' <<< "$h2")" ]; then
		ok=0; soft "$x: after the heal both hosts hold the same 2 SAs (spi + key hash)" "lab1 [$(short "$h1")] lab2 [$(short "$h2")]"
	fi
	record "$x: SPIs lab1 before -> after heal" "$(spis_of "$b1") -> $(spis_of "$h1")"
	record "$x: key hashes before -> after heal" "$(short "$b1" | sed 's/0x[0-9a-f]*://g') -> $(short "$h1" | sed 's/0x[0-9a-f]*://g')"
	sleep 3
	r=$(lplay "$x-again" playbooks/site.yml) || true
	chg=$r
	[ "$r" = "changed=0 failed=0" ] || { ok=0; soft "$x: a further site.yml is changed=0" "$r (log $OUT/$x-again.log)"; }
	mark "$x:end"
	for n in 1 2; do foreign_check "$n" "$x, healed" || ok=0; done
	l1=$(seqerr 1); l2=$(seqerr 2)
	if [ "$l1" != "$e1" ] || [ "$l2" != "$e2" ]; then seqe="+$((l1 - e1))/+$((l2 - e2))"; ok=0; soft "$x: XfrmInStateSeqError unchanged" "lab1 $e1 -> $l1, lab2 $e2 -> $l2"; fi
	xstat 1 > "$OUT/xfrm_stat-$x-after-lab1.txt"; xstat 2 > "$OUT/xfrm_stat-$x-after-lab2.txt"
	for n in 1 2; do
		line=$(xfrm_stat_delta "$OUT/xfrm_stat-$x-before-lab$n.txt" "$OUT/xfrm_stat-$x-after-lab$n.txt")
		record "$x: lab$n /proc/net/xfrm_stat deltas (drops during the gap)" "${line:-all 0}"
	done
	# traffic from the heal to the stage's end: both ways, nothing lost
	trf=""
	for n in 1 2; do
		local f c=2; [ "$n" = 2 ] && c=3
		ping_fetch "$n" "$OUT/ping-lab$n-$x.txt"
		f=$OUT/ping-lab$n-$x.txt
		read -r s g l <<< "$(ping_window "$f" "$(bound "$x:healed" "$c")" "$(bound "$x:end" "$c")")"
		read -r gs _ gl <<< "$(ping_window "$f" "$(bound "$x:start" "$c")" "$(bound "$x:healed" "$c")")"
		record "$x: lab$n ping: lost while lost+healing / sent, received, lost after the heal" "$gl of $gs / $s $g $l"
		trf+="$g/$s "
		{ [ "$g" -gt 0 ] && [ "$l" = 0 ]; } || { ok=0; soft "$x: lab$n ping passes after the heal (0 lost)" "sent $s, received $g, lost $l"; }
	done
	[ "$FAILED" = "$before_fail" ] || ok=0
	ROWS+=("$(printf '%-6s %-16s %-9s %-9s %-16s %-8s %-10s %s' "$x" "$(xargs <<< "$lost_s" | wc -w) lost, $(wc -w <<< "$(spis_of "$h1")") new" "$keys" "$seqe" "$trf" "$kfl" "${chg%% *}" "$([ $ok = 1 ] && echo PASS || echo FAIL)")")
}
for x in $STAGES; do
	case $x in
		a) stage_run a "lab1's owned SAs deleted" ;;
		b) stage_run b "lab1's $NSIM down/up" ;;
		c) stage_run c "teardown keep_guards" ;;
		d) stage_run d "lab2 rebooted" ;;
	esac
done

# --- 4. rekey after the heals ------------------------------------------------------------------------
if [[ " $STAGES " == *" rekey "* ]]; then
	b1=$(sas 1)
	mark "rekey:start"
	t=$(now)
	r=$(lplay rekey playbooks/rekey.yml -e rekey_check_traffic=true) || soft "rekey.yml after the heals" "$r (log $OUT/rekey.log)"
	mark "rekey:end"
	a1=$(sas 1); a2=$(sas 2)
	record "rekey.yml (SPIs lab1 $(spis_of "$b1") -> $(spis_of "$a1"))" "$r ($(elapsed "$t") s)"
	[ -z "$(comm -12 <(spis_of "$b1" | tr ' ' '\n' | sort) <(spis_of "$a1" | tr ' ' '\n' | sort))" ] \
		|| soft "rekey: every SPI changed" "$(spis_of "$b1") -> $(spis_of "$a1")"
	for line in $(printf '%s\n%s\n' "$a1" "$a2" | awk 'NF {print $4}'); do
		[ -z "${LOSTH[$line]:-}" ] || soft "rekey: no lost key installed again" "key ${line:0:8} lost in ${LOSTH[$line]}"
	done
	rk="" rk_ok=PASS
	for n in 1 2; do
		c=2; [ "$n" = 2 ] && c=3
		ping_fetch "$n" "$OUT/ping-lab$n-rekey.txt"
		read -r s g l <<< "$(ping_window "$OUT/ping-lab$n-rekey.txt" "$(bound rekey:start "$c")" "$(bound rekey:end "$c")")"
		record "rekey: lab$n ping sent / received / lost during rekey.yml" "$s / $g / $l"
		rk+="$g/$s "
		{ [ "$s" -gt 0 ] && [ "$l" = 0 ]; } || { rk_ok=FAIL; soft "rekey: no ping lost (lab$n)" "$l lost of $s"; }
	done
	ROWS+=("$(printf '%-6s %-16s %-9s %-9s %-16s %-8s %-10s %s' rekey "$(wc -w <<< "$(spis_of "$a1")") new" - - "$rk" - - "$rk_ok")")
fi
# --- 4b. molecule's lab_dpu scenario (written for real ConnectX/DPU hosts) against this pair -------------
# Unchanged: converge (site.yml), idempotence (changed=0), verify (packet offload ready, every owned SA
# and policy offloaded in packet mode on nsim0, 20 pings raise ethtool's ipsec_tx/rx_pkts on both hosts).
# Its inventory: the lab's connection file + this suite's IPsec hosts, the key store in group vars.
if [[ " $STAGES " == *" dpu "* ]]; then
	t=$(now)
	mark "dpu:start"
	dinv=$OUT/dpu-inventory
	mkdir -p "$dinv"
	cp "$RUN/inventory.yml" "$dinv/10-lab.yml"
	{ cat "$INVDIR/hosts.yml"; printf '        ipsec_keystore_path: %s\n' "$STORE"; } > "$dinv/20-ipsec.yml"
	if (cd "$REPO_ROOT" && IPSEC_DPU_INVENTORY=$dinv MOLECULE_PAIR=lab1,lab2 MOLECULE_SCENARIO=lab_dpu \
		MOLECULE_LOG_DIR=$OUT bash scripts/molecule.sh test) > "$OUT/dpu.log" 2>&1; then
		r=PASS
	else
		r=FAIL
		grep -E 'FAILED|AssertionError|fatal:|failed=[1-9]|CRITICAL' "$OUT/dpu.log" | cut -c1-300 | head -n 8 >&2 || true
	fi
	mark "dpu:end"
	v=$(grep -cE '(PASSED|passed)' "$OUT/dpu.log" || true)
	record "molecule test -s lab_dpu (converge, idempotence, verify) on the simulated ConnectX" \
		"$r: $(grep -oE '[0-9]+ passed[^=]*' "$OUT/dpu.log" | tail -n 1) ($(elapsed "$t") s, log $OUT/dpu.log)"
	[ "$r" = PASS ] || soft "molecule lab_dpu on the simulated ConnectX" "see $OUT/dpu.log"
	[ "$v" -gt 0 ] || soft "molecule lab_dpu verify ran tests" "no test result in $OUT/dpu.log"
	ROWS+=("$(printf '%-6s %-16s %-9s %-9s %-16s %-8s %-10s %s' dpu - - - - - - "$r")")
fi
sleep 2
for n in 1 2; do ping_stop "$n" "$OUT/ping-lab$n-final.txt"; done
mark "end"

# --- 5. the capture --------------------------------------------------------------------------------------
t=$(now)
pc=$("$VPY" "$LAB_DIR/pcap_esp.py" "$LAB_LINK_PCAP" --pair "$IP1,$IP2" "${LOST_LABELS[@]}") || { bad "pcap_esp.py" "failed"; pc=""; }
printf '%s\n' "$pc" > "$OUT/pcap-summary.txt"
record "capture: $(head -n 1 <<< "$pc")" "($(elapsed "$t") s, $(du -h "$LAB_LINK_PCAP" | cut -f1))"
dups=$(sed -n 's/^duplicate (spi, seq) pairs: \([0-9]*\).*/\1/p' <<< "$pc")
record "capture: (SPI, ESP seq) seen twice" "${dups:-?}"
[ "${dups:-1}" = 0 ] || soft "capture: no (SPI, seq) twice" "$(sed -n 2p <<< "$pc" | cut -c1-200)"
clear_tot=$(awk '/^segment / {for (i = 1; i < NF; i++) if ($i == "clear") {c += $(i + 1); break}} END {print c + 0}' <<< "$pc")
while read -r line; do
	record "  $(cut -d: -f1 <<< "$line" | sed 's/^segment //'):$(cut -d: -f2 <<< "$line")" "$(cut -d: -f3- <<< "$line" | cut -c1-120)"
done < <(grep '^segment ' <<< "$pc")
record "capture: protected-flow packets in clear (all segments)" "$clear_tot"
[ "$clear_tot" = 0 ] || soft "capture: 0 packets of the protected flows in clear" "$(grep -E 'clear [1-9]' <<< "$pc" | cut -c1-200 | head -n 3 | tr '\n' ' ')"
while read -r _ label n; do
	label=${label%:}
	record "capture: packets with a lost SPI after $label" "$n"
	[ "$n" = 0 ] || soft "capture: no lost SPI after $label" "$n packets"
done < <(grep '^lost ' <<< "$pc")

# --- 6. per-stage table, figures -------------------------------------------------------------------------
record "total" "$(elapsed "$T0") s"
{
	echo "lab/lifecycle.sh figures ($(date -u +%FT%TZ), offload $OFFLOAD on $NSIM, ping every $INTERVAL s both ways, gap $GAP s)"
	printf '%-6s %-16s %-9s %-9s %-16s %-8s %-10s %s\n' stage "SPIs lost/new" "old keys" SeqErr "rx/sent 1,2" "SAs left" "again" result
	printf '%s\n' "${ROWS[@]}"
	echo "capture: ${dups:-?} (SPI, seq) twice, $clear_tot protected packets in clear; $(head -n 1 <<< "$pc")"
	echo "foreign SA + policy: $FOREIGN_BAD failed check(s); total $(elapsed "$T0") s"
} > "$OUT/figures.txt"
record "figures" "$OUT/figures.txt"
while read -r line; do record "| $line" ""; done < "$OUT/figures.txt"
