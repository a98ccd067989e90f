#!/usr/bin/env bash
# The IKE backends (ipsec_backend: strongswan, libreswan) end to end on an own lab pair, with the
# VXLAN overlay topology (inventories/examples/lab-vxlan + -e ipsec_backend=...), offload none:
#   derive -> a foreign SA on lab1 (reqid 7, not ours, not the daemon's) -> [libreswan: site.yml
#   refused in its preflight while pluto is stopped, since pluto flushes every xfrm SA when it starts;
#   pluto started by hand, the foreign SA added again] -> site.yml --check --diff
#   (nothing written) -> converge -> IKE SAs established on both peers (the daemon's own status) ->
#   second run changed=0 -> overlay ping with a capture on lab1's link0 (only ESP) and the kernel
#   counters of the daemon's SAs rising on both peers -> verify.yml -> teardown.yml -> no connection,
#   no file, no SA of ours left, the foreign SA byte-for-byte intact.
# strongSwan runs on the default image; libreswan needs the image variant (LAB_VARIANT=libreswan:
# lab/packages.txt), so the pair is brought down and booted again from it (same ports).
#
#   bash lab/ike.sh                   # both; BACKENDS="libreswan" for one; LAB_KEEP=1 keeps the VMs
#
# Own pair: LAB_RUN=lab/run/ike, SSH 2301/2302, link 4481. Exit status 0 only if every step passed.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair ike 2301 2302 4481
BACKENDS=${BACKENDS:-strongswan libreswan}
for _b in $BACKENDS; do
	case $_b in strongswan | libreswan) ;; *) die "BACKENDS: unknown backend '$_b' (strongswan, libreswan)" ;; esac
done
INV=lab-vxlan
FOREIGN_SPI=0x0f0e0d01
# shellcheck disable=SC2016 # expanded on the VM
FOREIGN_ADD='ip xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi '$FOREIGN_SPI' reqid 7 mode transport aead "rfc4106(gcm(aes))" 0x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324 128'

report_init "lab IKE backends report"
T0=$(now)

# read with the collection's parsers (lab/owned.py: _xfrm_text, _guard, and _ike for the daemons)
OWNED_PY=$LAB_DIR/owned.py
# the daemon's SAs between the pair's addresses: every SA there but ours (owned reqid) and the foreign one
DAEMON_SAS=(--foreign --among 192.168.100.1 192.168.100.2 --except-spi "$FOREIGN_SPI")
ike_sas() { on "$1" 'ip -s xfrm state list nokeys' | python3 "$OWNED_PY" sas "${DAEMON_SAS[@]}"; }
ike_packets() { on "$1" 'ip -s xfrm state list nokeys' | python3 "$OWNED_PY" packets "${DAEMON_SAS[@]}"; }
# established connections / installed CHILD_SAs of the collection, from the daemon itself
ike_status() {
	if [ "$2" = strongswan ]; then
		on "$1" 'swanctl --list-sas 2>/dev/null' | python3 "$OWNED_PY" ike-status strongswan
	else
		on "$1" 'ipsec trafficstatus 2>/dev/null' | python3 "$OWNED_PY" ike-status libreswan
	fi
}
# SPIs (0x%08x, sorted, one line) of the daemon's SAs in labN's kernel (larval ones, spi 0, left out)
# / that the daemon itself lists
kernel_spis() { on "$1" 'ip xfrm state list nokeys' | python3 "$OWNED_PY" spis "${DAEMON_SAS[@]}" --except-spi 0 | xargs; }
daemon_spis() {
	if [ "$2" = strongswan ]; then
		on "$1" 'swanctl --list-sas 2>/dev/null' | python3 "$OWNED_PY" ike-spis strongswan | xargs
	else
		on "$1" 'ipsec whack --showstates 2>/dev/null' | python3 "$OWNED_PY" ike-spis libreswan | xargs
	fi
}
# the collection's guard policies on labN: owned reqid, action block, mark mask 0x1 (_guard.is_guard)
guards() { on "$1" 'ip xfrm policy list' | python3 "$OWNED_PY" guards; }
words_in() { # words of $1 that are in $2
	local w n=0; for w in $1; do case " $2 " in *" $w "*) n=$((n + 1)) ;; esac; done; echo "$n"
}
ike_files() { on "$1" 'ls /etc/swanctl/conf.d/ipsec_offload_mlx5-* /etc/ipsec.d/ipsec_offload_mlx5-* 2>/dev/null | wc -l'; }
ike_modes() { on "$1" 'stat -c %a /etc/swanctl/conf.d/ipsec_offload_mlx5-* /etc/ipsec.d/ipsec_offload_mlx5-* 2>/dev/null | sort -u | xargs'; }
# the foreign SA as the collection's parser reads it (one JSON line without counters, the key as its
# hash); empty when it is gone
foreign() {
	on 1 "ip xfrm state get src 192.168.100.1 dst 192.168.100.2 proto esp spi $FOREIGN_SPI 2>/dev/null" \
		| python3 "$OWNED_PY" sa-objects --all || true
}

backend() { # backend NAME: the whole cycle on a pair booted from the image that carries NAME
	local be=$1 t r b1 b2 a1 a2 wire esp clear T f0 f1
	T=$(now)
	if [ "$be" = libreswan ]; then export LAB_VARIANT=libreswan; else unset LAB_VARIANT; fi
	# the other backend's image may still run on this pair (LAB_KEEP=1): boot the right one
	local img; img=$(bash "$LAB_DIR/build.sh" dir)
	if [ -f "$RUN/vm1.pid" ] && [ "$(cat "$RUN/ike-image" 2>/dev/null)" != "$img" ]; then
		bash "$LAB_DIR/lab.sh" down > /dev/null 2>&1 || true
	fi
	lab_start
	echo "$img" > "$RUN/ike-image"
	record "$be: image" "$(basename "$img")"
	t=$(now)
	r=$(play "$be-prepare" "" lab/prepare.yml) || { bad "$be: lab/prepare.yml" "$r"; return 1; }
	record "$be: lab/prepare.yml (modules, OVS)" "$r ($(elapsed "$t") s)"
	lab_reset || return 1
	on 1 "ip xfrm state get src 192.168.100.1 dst 192.168.100.2 proto esp spi $FOREIGN_SPI > /dev/null 2>&1 || $FOREIGN_ADD" || { bad "$be: foreign SA" "could not add it on lab1"; return 1; }
	f0=$(foreign); [ -n "$f0" ] || { bad "$be: foreign SA" "not readable"; return 1; }
	record "$be: foreign SA on lab1 (spi $FOREIGN_SPI reqid 7)" "added"
	local E=(-e "ipsec_backend=$be")
	t=$(now); r=$(play "$be-derive" "$INV" playbooks/derive.yml "${E[@]}") || { bad "$be: derive.yml" "$r"; return 1; }
	record "$be: derive.yml (pairs, keys -> per-pair PSK)" "$r ($(elapsed "$t") s)"
	if [ "$be" = libreswan ]; then
		# pluto flushes every xfrm SA and policy when it starts: with pluto stopped and the foreign
		# SA installed, site.yml must refuse in its preflight, before any change, and say so
		on 1 'ipsec whack --status > /dev/null 2>&1' && { bad "$be: pluto" "already running on a fresh pair"; return 1; }
		t=$(now); r=$(play "$be-refused" "$INV" playbooks/site.yml "${E[@]}") \
			&& { bad "$be: site.yml with pluto stopped + a foreign SA" "not refused: $r"; return 1; }
		grep -q 'starting it flushes every' "$OUT/$be-refused.log" || { bad "$be: refusal message" "see $OUT/$be-refused.log"; return 1; }
		on 1 'ipsec whack --status > /dev/null 2>&1' && { bad "$be: refusal" "pluto was started"; return 1; }
		if [ "$(foreign)" != "$f0" ] || [ "$(ike_files 1)$(ike_files 2)" != 00 ]; then bad "$be: refusal" "the host changed"; return 1; fi
		record "$be: site.yml, pluto stopped + foreign SA on lab1" "refused in the preflight (pluto would flush it), host unchanged ($(elapsed "$t") s)"
		# what the message tells the operator: start pluto (its flush takes the foreign SA), then let
		# the other tool put its SA back, then converge; from here on the foreign SA must survive
		# shellcheck disable=SC2016 # expanded on the VM
		for n in 1 2; do on "$n" 'mkdir -p /run/pluto; ipsec checknss > /dev/null 2>&1; setsid -f ipsec pluto --config /etc/ipsec.conf < /dev/null > /dev/null 2>&1
			for i in $(seq 60); do ipsec whack --status > /dev/null 2>&1 && exit 0; sleep 1; done; exit 1' \
			|| { bad "$be: start pluto by hand on lab$n" "no answer in 60 s"; return 1; }; done
		[ -z "$(foreign)" ] || { bad "$be: pluto start" "did not flush the foreign SA (the guard's premise)"; return 1; }
		on 1 "$FOREIGN_ADD" || { bad "$be: foreign SA" "could not add it again"; return 1; }
		f0=$(foreign)
		record "$be: pluto started by hand (flushed the foreign SA), SA re-added" "as the refusal says"
	fi
	t=$(now); r=$(play "$be-check" "$INV" playbooks/site.yml "${E[@]}" --check --diff) || { bad "$be: site.yml --check --diff (fresh pair)" "$r (log $OUT/$be-check.log)"; return 1; }
	[ "$(ike_files 1)$(ike_files 2)" = 00 ] || { bad "$be: check mode wrote files" "see $OUT/$be-check.log"; return 1; }
	record "$be: site.yml --check --diff (fresh pair: nothing written)" "$r ($(elapsed "$t") s)"
	if grep -qiE '"?psk"?: *"[0-9a-f]{64}"|secret = "[0-9a-f]{64}"|PSK "[0-9a-f]{64}"' "$OUT/$be-check.log"; then
		bad "$be: a PSK in the check-mode output" "$OUT/$be-check.log"; return 1; fi
	t=$(now); r=$(play "$be-converge" "$INV" playbooks/site.yml "${E[@]}") || { bad "$be: site.yml converge" "$r (log $OUT/$be-converge.log)"; return 1; }
	record "$be: site.yml converge" "$r ($(elapsed "$t") s)"
	local s1 s2
	s1=$(ike_status 1 "$be"); s2=$(ike_status 2 "$be")
	record "$be: daemon status lab1 / lab2" "$s1 / $s2"
	case "$be:$s1:$s2" in
		# strongSwan: one CHILD_SA per direction of the udp/4789 selector; libreswan: one (merged, docs/ike.md)
		"strongswan:1 IKE / 2 CHILD:1 IKE / 2 CHILD" | "libreswan:1 CHILD:1 CHILD") ;;
		*) bad "$be: IKE SAs established on both peers" "want strongswan 1 IKE + 2 CHILD, libreswan 1 CHILD on each"; return 1 ;;
	esac
	record "$be: daemon SAs in the kernel lab1 / lab2; files; modes" "$(ike_sas 1) / $(ike_sas 2); $(ike_files 1)+$(ike_files 2); $(ike_modes 1)"
	[ "$(ike_modes 1)" = 600 ] || { bad "$be: file modes" "want 600"; return 1; }
	[ "$(owned_sas 1)$(owned_sas 2)" = 00 ] || { bad "$be: static SAs" "the iproute2 path ran too"; return 1; }
	t=$(now); r=$(play "$be-idempotence" "$INV" playbooks/site.yml "${E[@]}") || { bad "$be: site.yml second run" "$r"; return 1; }
	[ "$r" = "changed=0 failed=0" ] || { bad "$be: site.yml second run (must be changed=0)" "$r (log $OUT/$be-idempotence.log)"; return 1; }
	record "$be: site.yml second run (must be changed=0)" "$r ($(elapsed "$t") s)"

	b1=$(ike_packets 1); b2=$(ike_packets 2)
	wire=$(on 1 'timeout 15 tcpdump -l -n -i link0 -c 8 ip and not udp port 500 and not udp port 4500 2>/dev/null & sleep 1; ping -c 4 -i 0.3 -W 2 10.10.0.2 >/dev/null || echo PINGFAIL; wait')
	printf '%s\n' "$wire" > "$OUT/$be-wire.txt"
	a1=$(ike_packets 1); a2=$(ike_packets 2)
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	clear=$(grep -E '^[0-9]{2}:[0-9]{2}:' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	record "$be: lab1 link0 capture (4 overlay pings; IKE ports excluded)" "$esp ESP, $clear other IPv4 packets$(grep -q PINGFAIL <<< "$wire" && echo ', PING FAILED')"
	{ [ "$esp" -ge 4 ] && [ "$clear" = 0 ] && ! grep -q PINGFAIL <<< "$wire"; } || { bad "$be: only ESP on the wire" "see $OUT/$be-wire.txt"; return 1; }
	record "$be: daemon SA packets lab1 / lab2" "$b1 -> $a1 / $b2 -> $a2"
	if [ "$a1" -lt $((b1 + 8)) ] || [ "$a2" -lt $((b2 + 8)) ]; then
		bad "$be: SA counters rise on both peers" "by >= 8 (4 pings each way)"; return 1
	fi

	t=$(now)
	r=$(play "$be-verify" "$INV" playbooks/verify.yml "${E[@]}" -e verify_count=10) || true
	grep -E 'IKE |CHILD_SA' "$OUT/$be-verify.log" | grep -vE '^(TASK|ok:|skipping)' | sed 's/^ *//; s/^"msg": //; s/^"//; s/",\{0,1\}$//' | sort -u | head -12 > "$OUT/$be-verify-summary.txt" || true
	while read -r line; do record "  $be verify" "${line:0:110}"; done < "$OUT/$be-verify-summary.txt"
	case $r in *failed=0) record "$be: verify.yml (10 pings each way)" "$r ($(elapsed "$t") s)" ;;
		*) bad "$be: verify.yml" "$r (log $OUT/$be-verify.log)"; return 1 ;; esac

	loss "$be" || return 1

	t=$(now); r=$(play "$be-teardown" "$INV" playbooks/teardown.yml "${E[@]}") || { bad "$be: teardown.yml" "$r (log $OUT/$be-teardown.log)"; return 1; }
	record "$be: teardown.yml" "$r ($(elapsed "$t") s)"
	local left=0 n
	for n in 1 2; do
		local st sas files
		st=$(ike_status "$n" "$be"); sas=$(ike_sas "$n"); files=$(ike_files "$n")
		record "$be: lab$n after teardown: daemon status; daemon SAs; files" "$st; $sas; $files"
		case "$st" in "0 IKE / 0 CHILD" | "0 CHILD") ;; *) left=1 ;; esac
		[ "$sas$files" = 00 ] || left=1
	done
	[ "$left" = 0 ] || { bad "$be: teardown left connections, SAs or files" "see above"; return 1; }
	f1=$(foreign)
	[ "$f0" = "$f1" ] || { bad "$be: foreign SA intact" "changed or gone: '$f1'"; return 1; }
	record "$be: foreign SA after teardown" "intact"
	on 1 "ip xfrm state delete src 192.168.100.1 dst 192.168.100.2 proto esp spi $FOREIGN_SPI" || true
	lab_reset || return 1
	record "$be: total" "$(elapsed "$T") s"
}

# SA loss (the kernel deletes SAs and tells no daemon: link down, or by hand) on LOSS_VM, with pings
# running both ways: the daemon still lists them, protected traffic is dropped, never sent in clear;
# site.yml finds the loss and negotiates again (new SPIs on both VMs), traffic passes, then changed=0.
LOSS_VM=${LOSS_VM:-2}
loss() {
	local be=$1 t r k1 k2 d0 g1 g2 n1 miss belief wire esp clear p1 p2 ok12 ok21
	k1=$(kernel_spis 1); k2=$(kernel_spis 2); d0=$(daemon_spis "$LOSS_VM" "$be")
	g1=$(guards 1); g2=$(guards 2)
	record "$be loss: daemon SPIs in the kernel lab1 / lab2" "$k1 / $k2"
	record "$be loss: guard policies lab1 / lab2 (block, owned, mark mask 0x1)" "$g1 / $g2"
	{ [ "$g1" -gt 0 ] && [ "$g2" -gt 0 ]; } || { bad "$be loss: guards in place after site.yml" "none on one VM"; return 1; }
	{ [ -n "$k1" ] && [ "$(words_in "$d0" "$(kernel_spis "$LOSS_VM")")" -gt 0 ]; } || { bad "$be loss: daemon SAs before" "none"; return 1; }
	# pings both ways over the overlay (the protected VXLAN flow); the SAs go away 2 s into them
	on 1 'rm -f /tmp/loss-ping.txt; setsid -f sh -c "ping -D -i 0.5 -c 16 -W 1 10.10.0.2 > /tmp/loss-ping.txt 2>&1" < /dev/null > /dev/null 2>&1'
	on 2 'rm -f /tmp/loss-ping.txt; setsid -f sh -c "ping -D -i 0.5 -c 16 -W 1 10.10.0.1 > /tmp/loss-ping.txt 2>&1" < /dev/null > /dev/null 2>&1'
	sleep 2
	on "$LOSS_VM" 'ip xfrm state list nokeys' | python3 "$OWNED_PY" deletes "${DAEMON_SAS[@]}" --except-spi 0 > "$OUT/$be-loss-del.txt"
	n1=0
	while read -r l; do on "$LOSS_VM" "ip $l" && n1=$((n1 + 1)); done < "$OUT/$be-loss-del.txt"
	record "$be loss: lab$LOSS_VM: daemon SAs deleted in the kernel (ip xfrm state delete)" "$n1 (pings running both ways)"
	[ "$n1" -gt 0 ] || { bad "$be loss: delete" "no SA deleted"; return 1; }
	sleep 7
	p1=$(on 1 'tail -n 3 /tmp/loss-ping.txt' | grep -oE '[0-9]+ received' || true)
	p2=$(on 2 'tail -n 3 /tmp/loss-ping.txt' | grep -oE '[0-9]+ received' || true)
	record "$be loss: the running pings (16 each, SAs gone after ~2 s) lab1 / lab2" "${p1:-?} / ${p2:-?}"
	miss=$(( $(echo "$d0" | wc -w) - $(words_in "$d0" "$(kernel_spis "$LOSS_VM")") ))
	belief=$(ike_status "$LOSS_VM" "$be")
	record "$be loss: lab$LOSS_VM daemon status; its SPIs not in the kernel" "$belief (still installed for the daemon); $miss of $(echo "$d0" | wc -w)"
	# (libreswan: pluto also negotiates a new Child SA on the kernel's ACQUIRE, keeping the old one listed)
	record "$be loss: lab$LOSS_VM daemon SPIs before / now" "$d0 / $(daemon_spis "$LOSS_VM" "$be")"
	{ [ "$(words_in "$d0" "$(daemon_spis "$LOSS_VM" "$be")")" = "$(echo "$d0" | wc -w)" ] && [ "$miss" -gt 0 ]; } || { bad "$be loss: the daemon still believes them installed" "daemon SPIs '$(daemon_spis "$LOSS_VM" "$be")' (were '$d0')"; return 1; }
	# protected traffic now: dropped, and nothing in clear on the wire (IKE ports excluded)
	wire=$(on 1 'timeout 12 tcpdump -l -n -i link0 ip and not udp port 500 and not udp port 4500 2>/dev/null & sleep 1
		ping -c 5 -i 0.4 -W 1 10.10.0.2 2>&1 | grep -oE "[0-9]+ received" | sed "s/^/PING1 /"; wait')
	r=$(on 2 'ping -c 5 -i 0.4 -W 1 10.10.0.1 2>&1 | grep -oE "[0-9]+ received"' || true)
	printf '%s\n' "$wire" > "$OUT/$be-loss-wire.txt"
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	clear=$(grep -E '^[0-9]{2}:[0-9]{2}:' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	ok12=$(grep -oE 'PING1 [0-9]+' <<< "$wire" | awk '{print $2}'); ok21=${r%% *}
	record "$be loss: overlay pings (5 each way) lab1->lab2 / lab2->lab1 received" "${ok12:-?} / ${ok21:-?}"
	record "$be loss: lab1 link0 capture meanwhile (IKE ports excluded)" "$esp ESP, $clear other IPv4 packets (cleartext)"
	# strongSwan: dropped until site.yml; libreswan: pluto's own ACQUIRE renegotiation may carry them (ESP)
	{ [ "$clear" = 0 ] && { [ "$be" = libreswan ] || { [ "${ok12:-1}" = 0 ] && [ "${ok21:-1}" = 0 ]; }; }; } || { bad "$be loss: protected traffic dropped, none in clear" "see $OUT/$be-loss-wire.txt"; return 1; }
	t=$(now); r=$(play "$be-loss-heal" "$INV" playbooks/site.yml "${E[@]}") || { bad "$be loss: site.yml heal" "$r (log $OUT/$be-loss-heal.log)"; return 1; }
	record "$be loss: site.yml (finds the loss, negotiates again)" "$r ($(elapsed "$t") s)"
	grep -E 'lost (here|on )' "$OUT/$be-loss-heal.log" | sed -E 's/^ *"msg": "//; s/",?$//' | sort -u | head -4 \
		| while read -r line; do record "  $be heal" "${line:0:110}"; done
	local j1 j2
	j1=$(kernel_spis 1); j2=$(kernel_spis 2)
	record "$be loss: daemon SPIs in the kernel after lab1 / lab2" "$j1 / $j2"
	record "$be loss: daemon status after lab1 / lab2" "$(ike_status 1 "$be") / $(ike_status 2 "$be")"
	{ [ -n "$j1" ] && [ -n "$j2" ] && [ "$(words_in "$j1" "$k1 $k2")" = 0 ] && [ "$(words_in "$j2" "$k1 $k2")" = 0 ]; } \
		|| { bad "$be loss: new SPIs on both VMs" "an old SPI is back or none installed"; return 1; }
	[ "$(daemon_spis "$LOSS_VM" "$be")" = "$(kernel_spis "$LOSS_VM")" ] || { bad "$be loss: daemon and kernel agree" "daemon '$(daemon_spis "$LOSS_VM" "$be")' kernel '$(kernel_spis "$LOSS_VM")'"; return 1; }
	wire=$(on 1 'timeout 15 tcpdump -l -n -i link0 -c 8 ip and not udp port 500 and not udp port 4500 2>/dev/null & sleep 1; ping -c 4 -i 0.3 -W 2 10.10.0.2 >/dev/null || echo PINGFAIL; wait')
	printf '%s\n' "$wire" > "$OUT/$be-loss-wire-after.txt"
	r=$(on 2 'ping -c 4 -i 0.3 -W 2 10.10.0.1 2>&1 | grep -oE "[0-9]+ received"' || true)
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	clear=$(grep -E '^[0-9]{2}:[0-9]{2}:' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	record "$be loss: after: 4 pings lab1->lab2; lab2->lab1; lab1 link0" "$(grep -q PINGFAIL <<< "$wire" && echo FAILED || echo '4 received'); $r; $esp ESP, $clear other IPv4"
	{ ! grep -q PINGFAIL <<< "$wire" && [ "$r" = "4 received" ] && [ "$esp" -ge 4 ] && [ "$clear" = 0 ]; } || { bad "$be loss: traffic passes again, ESP only" "see $OUT/$be-loss-wire-after.txt"; return 1; }
	t=$(now); r=$(play "$be-loss-again" "$INV" playbooks/site.yml "${E[@]}") || { bad "$be loss: site.yml again" "$r"; return 1; }
	[ "$r" = "changed=0 failed=0" ] || { bad "$be loss: site.yml after the heal (must be changed=0)" "$r (log $OUT/$be-loss-again.log)"; return 1; }
	record "$be loss: site.yml after the heal (must be changed=0)" "$r ($(elapsed "$t") s)"
}

for be in $BACKENDS; do
	if ! backend "$be"; then
		play "$be-teardown-after-failure" "$INV" playbooks/teardown.yml -e "ipsec_backend=$be" > /dev/null 2>&1 || true
	fi
done
record "total" "$(elapsed "$T0") s"
