#!/usr/bin/env bash
# The lab: a real two-host pair (Debian trixie, kernel 6.12, iproute2 6.15) in QEMU TCG.
#
#   lab.sh setup        install the host tools that are missing (apt, as root)
#   lab.sh build        build the VM image, cached under lab/cache/ by a hash of its inputs
#   lab.sh up           boot lab1 + lab2 (reuses a running pair), wait for SSH, write
#                       lab/run/inventory.yml and lab/run/ssh_config
#   lab.sh down         stop the VMs (by PID file) and drop their disks; always safe to call
#   lab.sh status       what runs, on which ports, whether SSH answers
#   lab.sh ssh N [cmd]  SSH to labN (N = 1 or 2)
#   lab.sh reboot N     power labN off and boot the SAME disk again (overlay kept, new boot id),
#                       wait for SSH; N = 2 only: the link comes back only when lab2 reboots
#   lab.sh clean        down, then remove lab/cache and lab/run
#
# Topology: labN has mgmt0 (QEMU user-mode NIC, no route out; SSH via 127.0.0.1:LAB_SSH_PORTN)
# and link0 = 192.168.100.N/24, the L2 link between the two VMs (QEMU socket netdev on
# 127.0.0.1:LAB_LINK_PORT, lab1 listens). Each VM also has LAB_VFS VF stand-ins (veth pairs
# vfI <-> vfI_rep). Both boot from one cached image through throw-away qcow2 overlays.
#
# Knobs (environment):         default
#   LAB_SSH_PORT1 / 2          2231 / 2232     SSH forward on 127.0.0.1 for lab1 / lab2
#   LAB_LINK_PORT              4411            the inter-VM link's socket on 127.0.0.1
#   LAB_MEM                    1024            MiB per VM
#   LAB_CPUS                   1               vCPUs per VM (TCG; 2 VMs on a 2-core host)
#   LAB_VFS                    1               VF stand-ins per VM
#   LAB_SSH_TIMEOUT            300             seconds to wait for SSH after boot
#   LAB_LINK_PCAP              (unset)         capture the inter-VM link into this pcap file, from
#                                              'up' until 'down' (QEMU filter-dump on lab1's link
#                                              netdev: both directions, across reboots of lab2)
#   LAB_RUN / LAB_CACHE        lab/run, lab/cache
#   (image build knobs: see lab/build.sh)
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../scripts/common.sh
source "$LAB_DIR/../scripts/common.sh" # log, die, apt_need (installs only what is missing)

RUN=${LAB_RUN:-$LAB_DIR/run}
export LAB_CACHE=${LAB_CACHE:-$LAB_DIR/cache}
SSH_PORT1=${LAB_SSH_PORT1:-2231}
SSH_PORT2=${LAB_SSH_PORT2:-2232}
LINK_PORT=${LAB_LINK_PORT:-4411}
MEM=${LAB_MEM:-1024}
CPUS=${LAB_CPUS:-1}
VFS=${LAB_VFS:-1}
SSH_TIMEOUT=${LAB_SSH_TIMEOUT:-300}
LINK_PCAP=${LAB_LINK_PCAP:-}
VMS=(1 2)
# The link is a QEMU socket netdev, lab1 listens, lab2 connects. QEMU 7.2 (net/socket.c): when the
# connection ends, the listening side accepts again, the connecting side just closes its end. So
# a rebooted lab2 connects to lab1's listener again and the link works; a rebooted lab1 listens
# anew but lab2's netdev never reconnects. Tested (QEMU 7.2): 'reboot 2' -> ping over link0 at
# once; 'reboot 1' (LAB_REBOOT_ANY=1) -> lab1 boots its kept disk, but no TCP connection on the
# link port and 100% ping loss both ways, until lab2 is rebooted too. 'reboot' takes lab2 only.
REBOOTABLE=2

for _v in SSH_PORT1 SSH_PORT2 LINK_PORT MEM CPUS VFS SSH_TIMEOUT; do
	[[ ${!_v} =~ ^[0-9]+$ ]] || die "LAB_$_v must be a number, got '${!_v}'"
done
if [ "$SSH_PORT1" = "$SSH_PORT2" ] || [ "$SSH_PORT1" = "$LINK_PORT" ] || [ "$SSH_PORT2" = "$LINK_PORT" ]; then
	die "LAB_SSH_PORT1, LAB_SSH_PORT2 and LAB_LINK_PORT must differ"
fi

ssh_port() { if [ "$1" = 1 ]; then echo "$SSH_PORT1"; else echo "$SSH_PORT2"; fi; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- setup -------------------------------------------------------------------------------------
cmd_setup() {
	[ "$(uname -m)" = x86_64 ] || die "the lab needs an x86_64 host (found $(uname -m))"
	apt_need qemu-system-x86 qemu-utils mmdebstrap openssh-client e2fsprogs iproute2 util-linux \
		xz-utils debian-archive-keyring
	[ -f /usr/share/keyrings/debian-archive-trixie-stable.gpg ] || [ -n "${LAB_SUITE:-}" ] \
		|| die "this host's debian-archive-keyring has no trixie key: apt-get install -t bookworm-updates debian-archive-keyring"
}

# --- build -------------------------------------------------------------------------------------
image_dir() { "$LAB_DIR/build.sh" dir; }
cmd_build() {
	cmd_setup
	local t0; t0=$(now)
	"$LAB_DIR/build.sh" build > /dev/null || die "image build failed"
	mkdir -p "$RUN"
	echo "build_s=$(elapsed "$t0")" > "$RUN/build-time.txt"
	log "image ready: $(image_dir) ($(elapsed "$t0") s)"
}

# --- helpers for running VMs ---------------------------------------------------------------------
vm_pid() { # print the PID of our QEMU for VM $1 if it runs
	local f="$RUN/vm$1.pid" pid
	[ -s "$f" ] || return 1
	pid=$(cat "$f")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	# the PID must still be our QEMU (PIDs are reused): its command line names our overlay
	local cmdline; cmdline=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$RUN/vm$1.qcow2"* ]] || return 1
	echo "$pid"
}

port_user() { # print who listens on 127.0.0.1:$1 (TCP), nothing if free
	ss -Htlnp "sport = :$1" 2>/dev/null | awk '{ $1 = $1; print }'
}

ssh_cfg_write() {
	local n
	{
		echo "# Written by lab/lab.sh up; use: ssh -F $RUN/ssh_config lab1"
		for n in "${VMS[@]}"; do
			printf 'Host lab%s\n  HostName 127.0.0.1\n  Port %s\n' "$n" "$(ssh_port "$n")"
		done
		cat <<EOF
Host lab*
  User root
  IdentityFile $RUN/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $RUN/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 15
  ServerAliveCountMax 4
  LogLevel ERROR
  ControlMaster auto
  ControlPath /tmp/lab-ssh-%C
  ControlPersist 30
EOF
	} > "$RUN/ssh_config"
}

inventory_write() {
	local n tmp="$RUN/inventory.yml.new"
	{
		echo "# Written by lab/lab.sh up: the QEMU lab pair. Regenerated at each 'up'; do not edit."
		echo "all:"
		echo "  children:"
		echo "    lab:"
		echo "      hosts:"
		for n in "${VMS[@]}"; do
			cat <<EOF
        lab$n:
          ansible_host: 127.0.0.1
          ansible_port: $(ssh_port "$n")
          lab_id: $n
          lab_link_ip: 192.168.100.$n
EOF
		done
		cat <<EOF
      vars:
        ansible_user: root
        ansible_ssh_private_key_file: $RUN/id_ed25519
        ansible_python_interpreter: /usr/bin/python3
        ansible_ssh_common_args: >-
          -o UserKnownHostsFile=$RUN/known_hosts -o StrictHostKeyChecking=accept-new
          -o IdentitiesOnly=yes -o ServerAliveInterval=15
        ansible_ssh_pipelining: true
        lab_link_dev: link0
        lab_link_prefix: 192.168.100.0/24
        lab_mgmt_dev: mgmt0
        lab_vf_count: $VFS
        # the simulated ConnectX (lab/sim), once a suite has made it (lab/lib.sh sim_up)
        lab_sim_devlink: netdevsim/netdevsim1
        lab_sim_pf: nsim0
        lab_sim_wire: link0
        # VF 0's netdev and representor, once a suite has bound it (lab/lib.sh sim_vf_bind)
        lab_sim_vf: nsim0v0
        lab_sim_vf_rep: nsim0pf0vf0
EOF
	} > "$tmp"
	mv "$tmp" "$RUN/inventory.yml"
}

# Long-lived children (QEMU, SSH control masters) must not inherit the lock fd 8: close it for them.
# (The control socket lives in /tmp: a socket path must stay under ~107 bytes, $RUN may be long.)
ssh_ok() { timeout 20 ssh -F "$RUN/ssh_config" -o ConnectTimeout=5 "lab$1" true 2> "$RUN/ssh-lab$1.err" 8>&-; }

console_tail() { # console_tail N : what the VM printed last (the first thing to read when it dies)
	echo "---- lab$1 console (last 25 lines of $RUN/vm$1.console.log) ----" >&2
	tail -n 25 "$RUN/vm$1.console.log" 2>/dev/null | tr -d '\r' >&2 || true
	if [ -s "$RUN/vm$1.qemu.err" ]; then
		echo "---- lab$1 qemu stderr ($RUN/vm$1.qemu.err) ----" >&2
		grep -v "TCG doesn't support requested feature" "$RUN/vm$1.qemu.err" | tail -n 10 >&2 || true
	fi
	echo "----" >&2
}

start_vm() { # start_vm N IMAGE_DIR [keep]: keep = boot the existing overlay (a reboot)
	local n=$1 img=$2 keep=${3:-} netlink mac_n dump=()
	mac_n=$(printf %02x "$n")
	if [ "$n" = 1 ]; then netlink="listen=127.0.0.1:$LINK_PORT"; else netlink="connect=127.0.0.1:$LINK_PORT"; fi
	if [ -z "$keep" ]; then
		qemu-img create -q -f qcow2 -F qcow2 -b "$img/base.qcow2" "$RUN/vm$n.qcow2" \
			|| die "qemu-img create of the lab$n overlay failed"
		echo "$img" > "$RUN/vm$n.image"
		: > "$RUN/vm$n.console.log"
	else
		[ -f "$RUN/vm$n.qcow2" ] || die "lab$n has no overlay to boot again ($RUN/vm$n.qcow2)"
		mv -f "$RUN/vm$n.console.log" "$RUN/vm$n.console.log.prev" 2>/dev/null || true
		: > "$RUN/vm$n.console.log"
	fi
	# the link capture sits on lab1, the VM that is never rebooted (filter-dump truncates its file)
	if [ -n "$LINK_PCAP" ] && [ "$n" = 1 ]; then dump=(-object "filter-dump,id=linkdump,netdev=link,file=$LINK_PCAP"); fi
	local append="console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/lab/init panic=-1 quiet"
	append+=" mitigations=off labid=$n lab.key=$(awk '{print $2}' "$RUN/id_ed25519.pub") lab.vfs=$VFS"
	date +%s.%N > "$RUN/vm$n.started"
	# Not -daemonize: that sends QEMU's later stderr to /dev/null. setsid detaches it from this
	# shell's session; its stderr stays in vmN.qemu.err for post-mortems.
	rm -f "$RUN/vm$n.pid"
	setsid qemu-system-x86_64 -name "lab$n" -nodefaults -no-user-config -display none -no-reboot \
		-accel tcg,thread=multi -cpu max -smp "$CPUS" -m "$MEM" \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$append" \
		-drive "file=$RUN/vm$n.qcow2,if=virtio,format=qcow2,cache=unsafe" \
		-netdev "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:$(ssh_port "$n")-:22" \
		-device "virtio-net-pci,netdev=mgmt,mac=52:54:00:aa:00:$mac_n" \
		-netdev "socket,id=link,$netlink" \
		-device "virtio-net-pci,netdev=link,mac=52:54:00:bb:00:$mac_n" \
		${dump[@]+"${dump[@]}"} \
		-device virtio-rng-pci \
		-serial "file:$RUN/vm$n.console.log" \
		-pidfile "$RUN/vm$n.pid" < /dev/null > "$RUN/vm$n.qemu.err" 2>&1 8>&- &
	# started = it wrote its PID file and listens on its SSH forward (and lab1 on the link socket)
	local _i
	for _i in $(seq 100); do
		if vm_pid "$n" > /dev/null && [ -n "$(port_user "$(ssh_port "$n")")" ] \
			&& { [ "$n" != 1 ] || [ -n "$(port_user "$LINK_PORT")" ]; }; then
			return 0
		fi
		kill -0 $! 2>/dev/null || break
		sleep 0.1
	done
	console_tail "$n"
	[ "$n" = 1 ] || cmd_down quiet
	if grep -qiE "host forwarding rule|Address already in use|Could not connect|Connection refused" "$RUN/vm$n.qemu.err"; then
		die "lab$n did not start: a port is taken or the link listener is gone (SSH port $(ssh_port "$n"), link port $LINK_PORT; 'lab.sh status', 'lab.sh down', or set LAB_SSH_PORT$n / LAB_LINK_PORT)"
	fi
	if [ ! -s "$RUN/vm$n.qemu.err" ] && [ ! -s "$RUN/vm$n.console.log" ]; then
		die "lab$n: QEMU exited at once without a message (the guest reset before its console came up, and -no-reboot ends QEMU): is LAB_MEM=$MEM MiB enough? (default 1024)"
	fi
	die "lab$n: qemu-system-x86_64 did not start (its stderr and console are above)"
}

wait_ssh() { # wait_ssh [reuse] [N...]: wait until every VM (or VMs N...) answers SSH; fail on a dead VM or at the timeout
	local reuse=${1:-} n t0 pending=("${VMS[@]}") still
	[ $# -le 1 ] || pending=("${@:2}")
	t0=$(now)
	while [ ${#pending[@]} -gt 0 ]; do
		still=()
		for n in "${pending[@]}"; do
			if ! vm_pid "$n" > /dev/null; then
				console_tail "$n"
				cmd_down quiet
				die "lab$n died while booting (console tail above)"
			fi
			if ssh_ok "$n"; then
				if [ -z "$reuse" ]; then
					local s; s=$(elapsed "$(cat "$RUN/vm$n.started")")
					echo "boot_to_ssh_vm${n}_s=$s" >> "$RUN/timings.txt"
					log "lab$n: SSH up after $s s (127.0.0.1:$(ssh_port "$n"))"
				fi
			else
				still+=("$n")
			fi
		done
		pending=(${still[@]+"${still[@]}"})
		[ ${#pending[@]} -eq 0 ] && break
		if [ "$(awk -v e="$(elapsed "$t0")" -v t="$SSH_TIMEOUT" 'BEGIN { print (e > t) }')" = 1 ]; then
			for n in "${pending[@]}"; do
				console_tail "$n"
				printf 'last SSH attempt to lab%s: %s\n' "$n" "$(tail -n 3 "$RUN/ssh-lab$n.err" 2>/dev/null | tr "\n" " ")" >&2
			done
			cmd_down quiet
			die "SSH not up within ${SSH_TIMEOUT}s on: ${pending[*]/#/lab} (console tails above; raise LAB_SSH_TIMEOUT on a slow host)"
		fi
		sleep 1
	done
}

# --- up / down / status -------------------------------------------------------------------------
cmd_up() {
	mkdir -p "$RUN"
	exec 8> "$RUN/.lock"
	flock -w 900 8 || die "another lab.sh holds $RUN/.lock"
	local n running=()
	for n in "${VMS[@]}"; do vm_pid "$n" > /dev/null && running+=("$n"); done
	if [ ${#running[@]} -eq ${#VMS[@]} ]; then
		ssh_cfg_write
		wait_ssh reuse
		inventory_write
		log "lab already up (reused): inventory $RUN/inventory.yml"
		return 0
	fi
	if [ ${#running[@]} -gt 0 ]; then
		log "only lab${running[*]} runs: restarting the pair from scratch"
		cmd_down quiet
	fi
	# ports first (cheap, clear), then tools and image
	local p who busy=0
	for p in "$SSH_PORT1" "$SSH_PORT2" "$LINK_PORT"; do
		who=$(port_user "$p")
		if [ -n "$who" ]; then
			printf 'ERROR: 127.0.0.1:%s is already in use: %s\n' "$p" "$who" >&2
			busy=1
		fi
	done
	[ $busy = 0 ] || die "port(s) in use: a stale lab VM (try 'lab.sh down'; 'lab.sh status') or another process; or choose other ports with LAB_SSH_PORT1/LAB_SSH_PORT2/LAB_LINK_PORT"
	cmd_build
	local img; img=$(image_dir)
	[ -f "$img/manifest.txt" ] || die "no built image in $img"
	[ -f "$RUN/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C lab-controller -f "$RUN/id_ed25519" \
		|| die "ssh-keygen failed"
	rm -f "$RUN/known_hosts" "$RUN/inventory.yml" "$RUN/timings.txt"
	ssh_cfg_write
	local t0; t0=$(now)
	for n in "${VMS[@]}"; do # lab1 first: it listens on the link socket that lab2 connects to
		start_vm "$n" "$img"
		log "lab$n started (pid $(cat "$RUN/vm$n.pid"), SSH 127.0.0.1:$(ssh_port "$n"), ${MEM} MiB, $CPUS vCPU)"
	done
	wait_ssh
	echo "up_total_s=$(elapsed "$t0")" >> "$RUN/timings.txt"
	inventory_write
	log "lab up in $(elapsed "$t0") s: inventory $RUN/inventory.yml, ssh -F $RUN/ssh_config lab1"
}

cmd_down() {
	local quiet=${1:-} n pid f stopped=0
	[ -d "$RUN" ] || return 0
	for n in "${VMS[@]}"; do
		if pid=$(vm_pid "$n"); then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
			kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
			stopped=$((stopped + 1))
			[ -n "$quiet" ] || log "lab$n stopped (pid $pid)"
		elif [ -e "$RUN/vm$n.pid" ] && [ -z "$quiet" ]; then
			log "lab$n was not running (stale PID file removed)"
		fi
		rm -f "$RUN/vm$n.pid" "$RUN/vm$n.qcow2" "$RUN/vm$n.started" "$RUN/vm$n.image"
	done
	if [ -f "$RUN/ssh_config" ]; then # our SSH control masters
		for n in "${VMS[@]}"; do ssh -F "$RUN/ssh_config" -O exit "lab$n" > /dev/null 2>&1 || true; done
	fi
	rm -f "$RUN/inventory.yml" "$RUN/known_hosts" "$RUN"/ssh-lab*.err
	[ -n "$quiet" ] || [ $stopped -gt 0 ] || log "lab is down (nothing was running)"
}

cmd_status() {
	local n pid img rc=0
	img=$(image_dir 2>/dev/null || true)
	if [ -f "$img/manifest.txt" ]; then
		echo "image: $(basename "$img") ($(grep -E '^(kernel|iproute2)=' "$img/manifest.txt" | xargs))"
	else
		echo "image: not built for the current inputs (lab.sh build)"
	fi
	for n in "${VMS[@]}"; do
		if pid=$(vm_pid "$n"); then
			if [ -f "$RUN/ssh_config" ] && ssh_ok "$n"; then
				echo "lab$n: running (pid $pid), SSH 127.0.0.1:$(ssh_port "$n") up, $(ssh -F "$RUN/ssh_config" "lab$n" 'uptime -p' 2>/dev/null </dev/null)"
			else
				echo "lab$n: running (pid $pid), SSH 127.0.0.1:$(ssh_port "$n") NOT answering"
				rc=1
			fi
		else
			local who; who=$(port_user "$(ssh_port "$n")")
			echo "lab$n: not running${who:+ (but 127.0.0.1:$(ssh_port "$n") is taken: $who)}"
			rc=1
		fi
	done
	[ -f "$RUN/inventory.yml" ] && echo "inventory: $RUN/inventory.yml"
	return $rc
}

# reboot N: a real reboot of labN - its guest powers off (sync, root read-only), QEMU exits, and
# the same overlay boots again (same disk, new /proc/sys/kernel/random/boot_id). Only lab2 (see
# REBOOTABLE above). Prints "labN rebooted: boot_id OLD -> NEW, down D s, boot-to-SSH B s".
cmd_reboot() {
	local n=${1:-} pid old new img t0 t1
	[[ $n =~ ^[12]$ ]] || die "usage: lab.sh reboot 2"
	# LAB_REBOOT_ANY=1: reboot lab1 anyway (only to re-check the claim: the link stays dead)
	[ "$n" = "$REBOOTABLE" ] || [ "${LAB_REBOOT_ANY:-0}" = 1 ] || die "lab$n cannot be rebooted alone: it listens on the link socket and lab2's QEMU never reconnects to a new listener (QEMU net/socket.c), so the link would stay dead; reboot lab$REBOOTABLE, or 'down' + 'up' the pair"
	mkdir -p "$RUN"
	exec 8> "$RUN/.lock"
	flock -w 900 8 || die "another lab.sh holds $RUN/.lock"
	pid=$(vm_pid "$n") || die "lab$n is not running ('lab.sh up' first)"
	vm_pid "$((3 - n))" > /dev/null || die "lab$((3 - n)) is not running: the link needs it ('lab.sh up')"
	img=$(cat "$RUN/vm$n.image" 2>/dev/null || true)
	if [ ! -f "$img/vmlinuz" ]; then # older run dir: the overlay's backing file names the image
		img=$(dirname "$(qemu-img info -U --output=json "$RUN/vm$n.qcow2" | sed -n 's/.*"backing-filename": "\(.*\)",*$/\1/p' | head -n 1)")
	fi
	[ -f "$img/vmlinuz" ] || die "cannot find the image lab$n booted from (looked in '$img')"
	ssh_cfg_write
	old=$(timeout 30 ssh -F "$RUN/ssh_config" "lab$n" cat /proc/sys/kernel/random/boot_id < /dev/null 8>&- 2> /dev/null) \
		|| die "lab$n does not answer SSH: cannot reboot it cleanly"
	t0=$(now)
	# poweroff in the guest: init sends TERM/KILL to all, syncs, remounts / read-only, sysrq o
	timeout 20 ssh -F "$RUN/ssh_config" "lab$n" 'nohup poweroff > /dev/null 2>&1 &' < /dev/null > /dev/null 2>&1 8>&- || true
	for _ in $(seq 300); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2> /dev/null; then
		log "lab$n did not power off within 30 s: stopping its QEMU (pid $pid)"
		kill -TERM "$pid" 2> /dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.2; done
		kill -0 "$pid" 2> /dev/null && kill -KILL "$pid" 2> /dev/null
	fi
	ssh -F "$RUN/ssh_config" -O exit "lab$n" > /dev/null 2>&1 || true
	rm -f "$RUN/vm$n.pid"
	local down_s; down_s=$(elapsed "$t0")
	t1=$(now)
	start_vm "$n" "$img" keep
	wait_ssh "" "$n"
	new=$(ssh -F "$RUN/ssh_config" "lab$n" cat /proc/sys/kernel/random/boot_id < /dev/null 8>&-) \
		|| die "lab$n: no boot id after the reboot"
	[ "$new" != "$old" ] || die "lab$n: boot id unchanged ($new): not rebooted"
	echo "reboot_vm${n}_s=$(elapsed "$t0")" >> "$RUN/timings.txt"
	log "lab$n rebooted: boot_id $old -> $new, down ${down_s} s, boot-to-SSH $(elapsed "$t1") s"
}

cmd_ssh() {
	local n=${1:-}
	[[ $n =~ ^[12]$ ]] || die "usage: lab.sh ssh 1|2 [command...]"
	shift
	[ -f "$RUN/ssh_config" ] || die "the lab is not up (lab.sh up)"
	exec ssh -F "$RUN/ssh_config" "lab$n" "$@"
}

cmd_clean() {
	cmd_down
	# another lab (another LAB_RUN, e.g. molecule's) may still boot from this cache: leave it then
	local hit user
	hit=$(find /proc/[0-9]*/fd -lname "$LAB_CACHE/*" -printf '%h' -quit 2>/dev/null || true)
	user=${hit#/proc/} user=${user%%/*}
	if [ -n "$user" ]; then
		die "process $user ($(tr '\0' ' ' < "/proc/$user/cmdline" 2>/dev/null | cut -c1-60)...) still uses $LAB_CACHE: stop that lab first (LAB_RUN=... lab.sh down)"
	fi
	log "removing $LAB_CACHE and $RUN"
	rm -rf --one-file-system "$LAB_CACHE" "$RUN"
}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
	setup) cmd_setup ;;
	build) cmd_build ;;
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	ssh) shift; cmd_ssh "$@" ;;
	reboot) shift; cmd_reboot "$@" ;;
	clean) cmd_clean ;;
	help | -h | --help) usage ;;
	*) usage >&2; exit 2 ;;
esac
