#!/usr/bin/env bash
# Smoke test of the lab pair with raw commands over SSH (no Ansible):
#   1. ping lab1 -> lab2 over link0
#   2. `ip -V` is iproute2 6.15 on both
#   3. esp4, cls_flower, act_vlan, openvswitch load on both
#   4. netdevsim loads and `echo "ID 1" > /sys/bus/netdevsim/new_device` gives a devlink device
#   5. a transport-mode rfc4106(gcm(aes)) SA pair with a distinct key per direction carries ping
#      (ICMP only), and `ip -s xfrm state` counters rise on both VMs
# Then it removes what it added, and only that: its SAs and policies (by exact id/selector), its
# netdevsim device, the modules it loaded. Boots the pair if it is down (and stops it again at the
# end unless LAB_KEEP=1); reuses a running pair as it is. Prints timings; exits non-zero on failure.
# shellcheck disable=SC2016 # remote commands in single quotes expand on the VM, on purpose
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$LAB_DIR/lab.sh
RUN=${LAB_RUN:-$LAB_DIR/run}
PINGS=5

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '== smoke: %s\n' "$*" >&2; }
fail() { printf 'SMOKE FAIL: %s\n' "$*" >&2; exit 1; }
on() { local n=$1; shift; ssh -F "$RUN/ssh_config" "lab$n" "$@"; }
passed=0
ok() { passed=$((passed + 1)); printf '   ok: %s\n' "$*" >&2; }

T0=$(now)
# --- the pair ---------------------------------------------------------------------------------
t=$(now)
"$LAB" build || fail "lab.sh build failed"
T_BUILD=$(elapsed "$t")
booted=0
if "$LAB" status > /dev/null 2>&1; then
	step "reusing the running lab pair"
else
	booted=1
fi
t=$(now)
"$LAB" up || fail "lab.sh up failed"
T_UP=$(elapsed "$t")

# --- cleanup of what this run added (runs on success and on failure) --------------------------
declare -A ADDED_MODS=()  # VM -> modules this run loaded
declare -A NSIM_DEV=()    # VM -> netdevsim id this run created
XFRM_ADDED=0
cleanup() {
	local rc=$? n errs=0
	set +e
	trap - EXIT
	if [ "$XFRM_ADDED" = 1 ]; then
		for n in 1 2; do
			xfrm_del_batch "$n" | on "$n" ip -force -batch - 2>/dev/null
			if on "$n" "ip xfrm state get src $(ip_of "$n") dst $(ip_of "$(peer "$n")") proto esp spi $(spi "$n" "$(peer "$n")")" \
				</dev/null >/dev/null 2>&1; then
				echo "SMOKE CLEANUP: lab$n still has the smoke SA" >&2
				errs=1
			fi
		done
	fi
	for n in "${!NSIM_DEV[@]}"; do
		on "$n" "echo ${NSIM_DEV[$n]} > /sys/bus/netdevsim/del_device" </dev/null \
			|| { echo "SMOKE CLEANUP: lab$n: del_device ${NSIM_DEV[$n]} failed" >&2; errs=1; }
	done
	for n in "${!ADDED_MODS[@]}"; do
		# reverse load order; modprobe -r also drops dependencies nothing else uses
		on "$n" "for m in $(echo "${ADDED_MODS[$n]}" | tr ' ' '\n' | tac | xargs); do modprobe -r \$m || echo \$m; done" \
			</dev/null | grep . >&2 && { echo "SMOKE CLEANUP: lab$n: could not unload the modules above" >&2; errs=1; }
	done
	if [ "$booted" = 1 ] && [ "${LAB_KEEP:-0}" != 1 ]; then
		"$LAB" down
	fi
	[ $rc -eq 0 ] && [ $errs -ne 0 ] && rc=1
	exit $rc
}
trap cleanup EXIT

# --- 1. ping over link0 --------------------------------------------------------------------------
t=$(now)
step "ping lab1 -> lab2 over link0"
on 1 ping -c 3 -W 3 -I link0 192.168.100.2 </dev/null >/dev/null || fail "lab1 cannot ping 192.168.100.2 over link0"
ok "ping 192.168.100.1 -> 192.168.100.2"

# --- 2. iproute2 --------------------------------------------------------------------------------
for n in 1 2; do
	v=$(on "$n" ip -V </dev/null) || fail "lab$n: ip -V failed"
	[[ $v == *iproute2-6.15* ]] || fail "lab$n: expected iproute2 6.15, got: $v"
done
ok "ip -V: $v"

# --- 3. modules --------------------------------------------------------------------------------
MODS="esp4 cls_flower act_vlan openvswitch"
for n in 1 2; do
	# loaded before? (/sys/module/NAME exists for loaded modules)
	new=$(on "$n" "for m in $MODS; do [ -d /sys/module/\$m ] || echo \$m; done" </dev/null | xargs)
	ADDED_MODS[$n]=$new
	on "$n" "modprobe -a $MODS && for m in $MODS; do [ -d /sys/module/\$m ] || { echo \"\$m not loaded\"; exit 1; }; done" \
		</dev/null || fail "lab$n: modprobe $MODS failed"
done
ok "modprobe $MODS (both VMs)"

# --- 4. netdevsim --------------------------------------------------------------------------------
for n in 1 2; do
	new=$(on "$n" '[ -d /sys/module/netdevsim ] || echo netdevsim' </dev/null)
	on "$n" "modprobe netdevsim" </dev/null || fail "lab$n: modprobe netdevsim failed (built into the image under /lib/modules/\$(uname -r)/updates?)"
	[ -n "$new" ] && ADDED_MODS[$n]="${ADDED_MODS[$n]} netdevsim"
	id=$(on "$n" 'i=1; while [ -e /sys/bus/netdevsim/devices/netdevsim$i ]; do i=$((i + 1)); done; echo $i' </dev/null)
	[ "$id" = 1 ] || step "lab$n: netdevsim1 exists already (not ours), using netdevsim$id"
	on "$n" "echo '$id 1' > /sys/bus/netdevsim/new_device" </dev/null || fail "lab$n: new_device '$id 1' failed"
	NSIM_DEV[$n]=$id
	on "$n" "for i in 1 2 3 4 5 6 7 8 9 10; do devlink dev show netdevsim/netdevsim$id >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1" \
		</dev/null || fail "lab$n: no devlink device netdevsim/netdevsim$id after new_device"
	mode=$(on "$n" "devlink dev eswitch show netdevsim/netdevsim$id" </dev/null) || fail "lab$n: devlink eswitch show failed"
done
ok "netdevsim: devlink $mode"

# --- 5. ESP transport, rfc4106(gcm(aes)), one key per direction ---------------------------------
ip_of() { echo "192.168.100.$1"; }
peer() { echo $((3 - $1)); }
spi() { echo "0x5a6d00$1$2"; }      # SA from labA to labB: 0x5a6d00AB
reqid() { echo "0x5a6d0$1$2"; }
hexkey() { od -An -tx1 -N20 /dev/urandom | tr -d ' \n'; } # 16-byte AES key + 4-byte salt
declare -A KEY=([12]=$(hexkey) [21]=$(hexkey))
[ "${KEY[12]}" != "${KEY[21]}" ] || fail "the two directions got the same key"

xfrm_add_batch() { # the lines for labN; keys travel on ssh's stdin to `ip -batch -`, never in argv
	local a=$1 b; b=$(peer "$1")
	local A B; A=$(ip_of "$a") B=$(ip_of "$b")
	cat <<EOF
xfrm state add src $A dst $B proto esp spi $(spi "$a" "$b") reqid $(reqid "$a" "$b") mode transport aead rfc4106(gcm(aes)) 0x${KEY[$a$b]} 128 flag esn dir out sel src $A/32 dst $B/32 proto icmp
xfrm state add src $B dst $A proto esp spi $(spi "$b" "$a") reqid $(reqid "$b" "$a") mode transport aead rfc4106(gcm(aes)) 0x${KEY[$b$a]} 128 flag esn replay-window 64 dir in sel src $B/32 dst $A/32 proto icmp
xfrm policy add src $A/32 dst $B/32 proto icmp dir out tmpl src $A dst $B proto esp reqid $(reqid "$a" "$b") mode transport
xfrm policy add src $B/32 dst $A/32 proto icmp dir in tmpl src $B dst $A proto esp reqid $(reqid "$b" "$a") mode transport
EOF
}
xfrm_del_batch() {
	local a=$1 b; b=$(peer "$1")
	local A B; A=$(ip_of "$a") B=$(ip_of "$b")
	cat <<EOF
xfrm policy delete src $A/32 dst $B/32 proto icmp dir out
xfrm policy delete src $B/32 dst $A/32 proto icmp dir in
xfrm state delete src $A dst $B proto esp spi $(spi "$a" "$b")
xfrm state delete src $B dst $A proto esp spi $(spi "$b" "$a")
EOF
}
packets() { # packets N SRC DST SPI : the SA's "lifetime current" packet count on labN
	on "$1" "ip -s xfrm state get src $2 dst $3 proto esp spi $4" </dev/null \
		| awk '/lifetime current:/ { getline; if (match($0, /[0-9]+\(packets\)/)) { print substr($0, RSTART, RLENGTH - 9); exit } }'
}

step "ESP transport SA pair (rfc4106(gcm(aes)), ESN, per-direction keys, ICMP selectors)"
for n in 1 2; do # refuse to touch anything that is already there
	A=$(ip_of "$n") B=$(ip_of "$(peer "$n")")
	if on "$n" "ip xfrm state get src $A dst $B proto esp spi $(spi "$n" "$(peer "$n")") || \
		ip xfrm state get src $B dst $A proto esp spi $(spi "$(peer "$n")" "$n") || \
		ip xfrm policy get src $A/32 dst $B/32 proto icmp dir out || ip xfrm policy get src $B/32 dst $A/32 proto icmp dir in" \
		</dev/null >/dev/null 2>&1; then
		fail "lab$n already has an SA/policy with the smoke test's SPI or selector (not touching it)"
	fi
done
XFRM_ADDED=1
for n in 1 2; do
	xfrm_add_batch "$n" | on "$n" ip -batch - || fail "lab$n: ip -batch (xfrm state/policy add) failed"
done
declare -A BEFORE=()
for n in 1 2; do
	for d in out in; do
		if [ $d = out ]; then a=$n b=$(peer "$n"); else a=$(peer "$n") b=$n; fi
		c=$(packets "$n" "$(ip_of "$a")" "$(ip_of "$b")" "$(spi "$a" "$b")")
		[[ $c =~ ^[0-9]+$ ]] || fail "lab$n: cannot read the packet counter of SA $(spi "$a" "$b")"
		BEFORE[$n$d]=$c
	done
done
on 1 "ping -c $PINGS -i 0.3 -W 3 -I link0 192.168.100.2" </dev/null >/dev/null \
	|| fail "ping lab1 -> lab2 through the ESP SAs failed (see: lab.sh ssh 1 ip -s xfrm state; cat /proc/net/xfrm_stat)"
summary=""
for n in 1 2; do
	for d in out in; do
		if [ $d = out ]; then a=$n b=$(peer "$n"); else a=$(peer "$n") b=$n; fi
		c=$(packets "$n" "$(ip_of "$a")" "$(ip_of "$b")" "$(spi "$a" "$b")")
		rise=$((c - BEFORE[$n$d]))
		[ "$rise" -ge "$PINGS" ] \
			|| fail "lab$n: SA $(spi "$a" "$b") ($d) counted $rise packets for $PINGS pings (expected >= $PINGS)"
		summary+=" lab$n/$d+$rise"
	done
done
ok "ESP ping: packet counters rose:$summary"

# --- cleanup + timings -------------------------------------------------------------------------
trap - EXIT
set +e
( cleanup ) # the same cleanup as on failure; its exit status is this script's
rc=$?
set -e
[ $rc -eq 0 ] || fail "cleanup did not complete (see above)"
ok "removed the smoke SAs/policies, netdevsim devices and modules it loaded"
{
	echo "---- timings"
	echo "build (lab.sh build):    ${T_BUILD} s (last full build of this image: $(sed -n 's/^time_total_s=//p' "$("$LAB_DIR/build.sh" dir)/manifest.txt") s)"
	if [ "$booted" = 1 ]; then
		echo "up (boot both VMs):      ${T_UP} s"
		sed -n 's/^boot_to_ssh_vm\([0-9]\)_s=/boot-to-SSH lab\1:        /p' "$RUN/timings.txt" 2>/dev/null | sed 's/$/ s/'
	else
		echo "up:                      ${T_UP} s (reused a running pair)"
	fi
	echo "total:                   $(elapsed "$T0") s"
	echo "smoke: $passed passed, 0 failed"
} >&2
