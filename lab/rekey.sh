#!/usr/bin/env bash
# Key rotation without loss, and the site-level rollback, on the lab pair (lab/lab.sh), one command:
#   1. rollback: a pre-state on both VMs (a foreign SA + policy, a stale OWNED policy that site.yml
#      would remove), snapshot (ip xfrm state nokeys / policy, tc qdiscs + ingress filters, OVS,
#      links and addresses), site.yml with a topology play that fails on purpose
#      (-e ipsec_topology=vxlan_overlay without its variables: the role refuses) AFTER the IPsec play
#      applied its SAs and policies -> the run must fail, the rescue must undo the IPsec changes,
#      and each host must equal its snapshot again; the pre-state is then removed by hand.
#   2. rekey: site.yml converge (inventories/examples/lab), ping -i 0.01 (100 pps) on BOTH peers
#      towards each other over the IPsec path (link0, transport ESP), rekey.yml REKEYS times (3),
#      pings stopped (rekey_check_traffic=true: phase 4b requires that the new outbound SAs carried
#      packets before the old inbound ones go); per rekey and direction: sent/received/lost (by icmp_seq, see below), SPIs
#      before -> after (must all change), old SAs gone, /proc/net/xfrm_stat deltas (must be 0),
#      owned SA packet counters (the pings went over ESP); then site.yml must be changed=0.
# Exit status 0 only if every step passed and no ping was lost in any rekey.
#
#   bash lab/rekey.sh            # REKEYS=N, ROLLBACK=0 skips part 1, LAB_KEEP=1 keeps the VMs
#
# Loss accounting: ping -D prints every reply with its icmp_seq and time. A sequence number that got
# no reply although a later one did is LOST. The packets sent in the last round trip before the
# pings are stopped (SIGINT: ping exits at once, without waiting for their replies) are reported as
# "unanswered at stop" and not counted as lost - that is what `ping -w`/Ctrl-C report as loss (the
# 1 of 5468 "lost" in the first hand measurement). The pings are stopped 3 s after the last rekey,
# so a path broken by a rekey would show hundreds of them: more than 50 fails the run.
# Each sequence number is given to the rekey whose run (VM clock) contains its reply time
# (interpolated for a lost one); packets between rekeys are in the total.
#
# Own lab pair (LAB_RUN=lab/run/rekey, SSH 2271/2272, link 4451); a running pair is reused.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair rekey 2271 2272 4451
REKEYS=${REKEYS:-3}
ROLLBACK=${ROLLBACK:-1}
[[ $REKEYS =~ ^[1-9][0-9]?$ ]] || die "REKEYS must be 1..99 (got '$REKEYS')"
INV=lab
PEER1=192.168.100.2 PEER2=192.168.100.1 # what lab1 / lab2 ping

soft() { bad "$@" || true; } # record a failure, carry on
on() { on_patient "$@"; } # lib.sh: a failed ssh connection is retried
report_init "lab rekey report"
T0=$(now)
lab_start

t=$(now)
if r=$(play prepare "" lab/prepare.yml); then record "lab/prepare.yml (modules, OVS)" "$r ($(elapsed "$t") s)"
else bad "lab/prepare.yml" "$r"; exit 1; fi

# a pair reused from an earlier run may still carry owned objects (the rollback check needs none)
if [ "$ROLLBACK" = 1 ] && [ "$(owned_sas 1)$(owned_sps 1)$(owned_sas 2)$(owned_sps 2)" != 0000 ]; then
	t=$(now); r=$(play teardown-before "$INV" playbooks/teardown.yml) || { bad "teardown.yml (reused pair)" "$r"; exit 1; }
	record "teardown.yml (reused pair had owned objects)" "$r ($(elapsed "$t") s)"
fi

# --- 1. site-level rollback ----------------------------------------------------------------------
# shellcheck disable=SC2016 # expanded on the VM
SNAP='ip xfrm state list nokeys; echo "== policies"; ip xfrm policy list; echo "== tc"; tc qdisc show
	for d in link0 vf0_rep; do echo "-- $d ingress"; tc filter show dev $d ingress 2>&1; done
	echo "== ovs"; ovs-vsctl show 2>&1; echo "== links"; ip -o link show | sed "s/ *link\/.*//"; ip -br addr'
snapshot() { on "$1" "$SNAP"; }
# lab-only pre-state: a foreign SA + policy (reqid 0x100, key from the VM's urandom, via stdin) and
# a stale OWNED out policy (reqid 0x51c0fff0, selector to 10.98.0.1) that site.yml's overridden removes
prestate() { # prestate N add|del (the key goes to ip -batch on stdin, generated on the VM)
	local me=192.168.100.$1
	if [ "$2" = add ]; then
		# shellcheck disable=SC2087 # $me expands here, \$k on the VM
		ssh -F "$RUN/ssh_config" "lab$1" bash -s <<-EOF
			set -e
			k=\$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
			ip -batch - <<B
			xfrm state add src $me dst 10.99.0.1 proto esp spi 0x00000abc reqid 0x100 mode transport aead rfc4106(gcm(aes)) 0x\$k 128 sel src $me/32 dst 10.99.0.1/32
			xfrm policy add src $me/32 dst 10.99.0.1/32 dir out priority 9 tmpl src $me dst 10.99.0.1 proto esp reqid 0x100 mode transport
			xfrm policy add src $me/32 dst 10.98.0.1/32 dir out priority 5 tmpl src $me dst 10.98.0.1 proto esp reqid 0x51c0fff0 mode transport
			B
		EOF
	else
		on "$1" "ip xfrm state delete src $me dst 10.99.0.1 proto esp spi 0x00000abc; ip xfrm policy delete src $me/32 dst 10.99.0.1/32 dir out
			ip xfrm policy delete src $me/32 dst 10.98.0.1/32 dir out 2>/dev/null; true"
	fi
}
if [ "$ROLLBACK" = 1 ]; then
	T=$(now)
	for n in 1 2; do prestate "$n" add || { bad "lab$n pre-state" "ip -batch failed"; exit 1; }; done
	for n in 1 2; do snapshot "$n" > "$OUT/rollback-before-lab$n.txt"; done
	record "rollback: pre-state lab1 / lab2 (foreign SA+SP, stale owned SP)" \
		"owned SAs/SPs $(owned_sas 1)/$(owned_sps 1), $(owned_sas 2)/$(owned_sps 2); SAs/SPs on lab1 (all) $(all_sas 1)/$(all_sps 1)"
	t=$(now)
	if r=$(play rollback "$INV" playbooks/site.yml -e ipsec_topology=vxlan_overlay); then
		soft "rollback: site.yml with a failing topology play" "it did not fail ($r)"
	else
		record "rollback: site.yml, topology play fails on purpose" "$r ($(elapsed "$t") s)"
	fi
	log=$OUT/rollback.log
	# the IPsec play did apply (changed on both hosts), then the topology play failed and rolled back
	applied=$(awk '/^TASK \[ipsec_offload.mlx5.ipsec : IPsec states/ {f = 1; next} /^TASK/ {f = 0} f && /^changed:/ {c++} END {print c + 0}' "$log")
	undone=$(awk '/^TASK \[ipsec_offload.mlx5.ipsec : Remove the SAs this run added/ {f = 1; next} /^TASK/ {f = 0} f && /^changed:/ {c++} END {print c + 0}' "$log")
	restored=$(awk '/^TASK \[ipsec_offload.mlx5.ipsec : Give back the policies/ {f = 1; next} /^TASK/ {f = 0} f && /^changed:/ {c++} END {print c + 0}' "$log")
	record "rollback: hosts where the IPsec play added SAs / rolled back SAs / restored SPs" "$applied / $undone / $restored"
	{ [ "$applied" = 2 ] && [ "$undone" = 2 ] && [ "$restored" = 2 ]; } || soft "rollback: IPsec applied then undone on both hosts" "see $log"
	grep -o 'IPsec rollback[^"]*' "$log" | sed 's/\\n/ /g' | sort -u | head -n 2 | while read -r line; do record "  rollback message" "${line:0:110}"; done
	for n in 1 2; do
		snapshot "$n" > "$OUT/rollback-after-lab$n.txt"
		if diff -u "$OUT/rollback-before-lab$n.txt" "$OUT/rollback-after-lab$n.txt" > "$OUT/rollback-diff-lab$n.txt"; then
			record "rollback: lab$n xfrm state/policy, tc, OVS, links == snapshot" "identical ($(wc -l < "$OUT/rollback-after-lab$n.txt") lines)"
		else
			soft "rollback: lab$n state differs from the snapshot" "see $OUT/rollback-diff-lab$n.txt"
		fi
	done
	for n in 1 2; do prestate "$n" del; done
	[ "$(owned_sas 1)$(owned_sps 1)$(owned_sas 2)$(owned_sps 2)" = 0000 ] || { bad "rollback: pre-state removed" "owned objects left"; exit 1; }
	record "rollback: total" "$(elapsed "$T") s"
fi

# --- 2. rekey under 100 pps ------------------------------------------------------------------------
t=$(now); r=$(play converge "$INV" playbooks/site.yml) || { bad "site.yml converge" "$r (log $OUT/converge.log)"; exit 1; }
record "site.yml converge" "$r ($(elapsed "$t") s)"

# owned SAs of labN as "src>dst:spi" lines, sorted (lab/owned.py: the collection's parser)
spis() { on "$1" "ip xfrm state list nokeys" | python3 "$LAB_DIR/owned.py" ids; }
xstat() { on "$1" "cat /proc/net/xfrm_stat"; }
vmclock_offset() { # VM clock minus controller clock (s), from the midpoint of one SSH round trip
	local a b v; a=$(now); v=$(on "$1" 'date +%s.%N'); b=$(now)
	awk -v a="$a" -v b="$b" -v v="$v" 'BEGIN { printf "%.3f", v - (a + b) / 2 }'
}
for n in 1 2; do xstat "$n" > "$OUT/xfrm_stat-before-lab$n.txt"; done
OFF1=$(vmclock_offset 1); OFF2=$(vmclock_offset 2)
record "VM clock offset lab1 / lab2 (s)" "$OFF1 / $OFF2"
# shellcheck disable=SC2016 # expanded on the VM
on 1 "rm -f /tmp/rekey-ping.out; nohup ping -D -i 0.01 $PEER1 > /tmp/rekey-ping.out 2>&1 & echo \$! > /tmp/rekey-ping.pid"
# shellcheck disable=SC2016 # expanded on the VM
on 2 "rm -f /tmp/rekey-ping.out; nohup ping -D -i 0.01 $PEER2 > /tmp/rekey-ping.out 2>&1 & echo \$! > /tmp/rekey-ping.pid"
sleep 2
WINDOWS=""
for i in $(seq 1 "$REKEYS"); do
	b1=$(spis 1); b2=$(spis 2)
	t=$(now)
	r=$(play "rekey$i" "$INV" playbooks/rekey.yml -e rekey_check_traffic=true) || soft "rekey $i: rekey.yml" "$r (log $OUT/rekey$i.log)"
	e=$(now)
	WINDOWS="$WINDOWS $t $e"
	a1=$(spis 1); a2=$(spis 2)
	record "rekey $i: rekey.yml" "$r ($(elapsed "$t") s)"
	for n in 1 2; do
		b=$b1 a=$a1; [ "$n" = 2 ] && b=$b2 a=$a2
		record "rekey $i: lab$n SPIs before -> after" "$(cut -d: -f2 <<< "$b" | xargs) -> $(cut -d: -f2 <<< "$a" | xargs)"
		# every SA identity (src>dst) is still there, each with a new SPI, and no old SPI is left
		if [ "$(cut -d: -f1 <<< "$b")" != "$(cut -d: -f1 <<< "$a")" ] || [ "$(wc -l <<< "$a")" != 2 ] \
			|| [ -n "$(comm -12 <(cut -d: -f2 <<< "$b" | sort) <(cut -d: -f2 <<< "$a" | sort))" ]; then
			soft "rekey $i: lab$n SPIs all changed, old SAs gone" "before [$(xargs <<< "$b")] after [$(xargs <<< "$a")]"
		fi
	done
done
sleep 3
for n in 1 2; do
	# shellcheck disable=SC2016 # expanded on the VM
	on "$n" 'kill -INT "$(cat /tmp/rekey-ping.pid)"; sleep 1; cat /tmp/rekey-ping.out' > "$OUT/ping-lab$n.txt"
	xstat "$n" > "$OUT/xfrm_stat-after-lab$n.txt"
done

# per rekey window (VM clock = controller clock + offset): sent / received / lost
loss() { # loss PINGFILE OFFSET -> lines "rekey I SENT RECEIVED LOST" and "total TX RX LOST TAIL"
	awk -v W="$WINDOWS" -v off="$2" '
		/icmp_seq=/ {
			ts = $1; gsub(/[][]/, "", ts)
			split($0, a, "icmp_seq="); split(a[2], b, " "); q = b[1] + 65536 * wrap
			if (q < hi - 32768) { wrap++; q += 65536 }
			if (!(q in t)) { t[q] = ts + 0; rx++ }
			if (q > hi) hi = q
		}
		/packets transmitted/ { tx = $1 }
		END {
			last = 0; lost = 0
			for (s = 1; s <= hi; s++) { if (s in t) last = t[s]; else { lost++; miss[s] = 1; t[s] = last } }
			nw = split(W, w, " ")
			for (i = 1; i <= nw / 2; i++) {
				sent = 0; l = 0
				for (s = 1; s <= hi; s++) if (t[s] >= w[2 * i - 1] + off && t[s] <= w[2 * i] + off) { sent++; if (s in miss) l++ }
				printf "rekey %d %d %d %d\n", i, sent, sent - l, l
			}
			tail = tx - hi; if (tx == 0) tail = -1
			printf "total %d %d %d %d\n", tx, rx, lost, tail
		}' "$1"
}
for n in 1 2; do
	f=$OUT/ping-lab$n.txt off=$OFF1 dir="lab1 -> lab2 -> lab1"
	[ "$n" = 2 ] && off=$OFF2 dir="lab2 -> lab1 -> lab2"
	loss "$f" "$off" > "$OUT/loss-lab$n.txt"
	while read -r what i s rcv l; do
		if [ "$what" = rekey ]; then
			record "rekey $i: ping $dir sent/received/lost" "$s / $rcv / $l"
			{ [ "$l" = 0 ] && [ "$s" -gt 0 ]; } || soft "rekey $i: no ping lost ($dir)" "$l lost of $s"
		else
			# total line: i=transmitted s=received rcv=lost l=unanswered at stop
			record "all: ping $dir transmitted/received/lost/unanswered at stop" "$i / $s / $rcv / $l ($(awk '/packets transmitted/ {for (k = 1; k < NF; k++) if ($k == "time") t = $(k + 1) + 0; printf "%.0f pps achieved", $1 / (t / 1000 + 0.001)}' "$f"))"
			[ "$rcv" = 0 ] || soft "all: no ping lost ($dir)" "$rcv lost (see $f)"
			{ [ "$l" -ge 0 ] && [ "$l" -le 50 ]; } || soft "all: pings answered until the stop ($dir)" "$l unanswered (see $f)"
		fi
	done < "$OUT/loss-lab$n.txt"
	grep -q 'packets transmitted' "$f" || soft "ping on lab$n" "no summary (see $f)"
	d=$(xfrm_stat_delta "$OUT/xfrm_stat-before-lab$n.txt" "$OUT/xfrm_stat-after-lab$n.txt")
	record "lab$n /proc/net/xfrm_stat deltas" "${d:-all 0}"
	[ -z "$d" ] || soft "lab$n xfrm error counters" "$d"
	p=$(owned_packets "$n")
	record "lab$n owned SA packets (since the last rekey)" "$p"
	[ "$p" -gt 0 ] || soft "lab$n pings over ESP" "the owned SAs counted no packet"
done

t=$(now); r=$(play after "$INV" playbooks/site.yml) || soft "site.yml after the rekeys" "$r"
record "site.yml after the rekeys (must be changed=0)" "$r ($(elapsed "$t") s)"
[ "$r" = "changed=0 failed=0" ] || soft "site.yml changed=0 after the rekeys" "$r (log $OUT/after.log)"
record "total" "$(elapsed "$T0") s"
