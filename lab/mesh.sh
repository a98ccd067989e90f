#!/usr/bin/env bash
# A real full mesh on the lab pair (lab/lab.sh): 8 hosts, then 9, then 8 again, each an inventory
# host in a network namespace of one of the two VMs, converged by playbooks/site.yml.
#
#   labN: bridge br-mesh holds link0 (the wire between the VMs) and, per mesh host meshK placed on
#   labN, the veth end mbK; the other end, veth0, is in namespace meshK with 10.77.0.K/24. So every
#   namespace reaches every other, on the same VM through its bridge, across VMs over link0.
#   lab/mesh.py writes the inventory ($OUT/inventory/hosts.yml: ansible_port of the VM,
#   ipsec_namespace meshK, ipsec_local_ip 10.77.0.K, ipsec_dev veth0, one ipsec_meshes group;
#   ipsec_offload none: veth has no IPsec offload, the SAs are software ESP) and reads the VMs'
#   owned SAs and policies (per namespace: identities, packet counters, a hash of each key; the
#   key itself never leaves the VM).
#
# Steps: lab prep (bridge, 8 namespaces, every ordered pair pings in clear) -> site.yml converge ->
# every directed pair has its SA out on the sender and in on the receiver (same SPI, reqid, key
# hash) -> each of the 56 ordered pairs pings (3 each) with lab1's link0 captured: the per-SA
# packet counters of all 56 directed SAs rise on both ends, only ESP crosses link0 -> second
# site.yml changed=0 -> a ninth host (mesh9 on lab1): site.yml, the 56 existing directed SAs kept
# their SPI, reqid and key (compared by hash), the 16 new ones carry traffic -> one host leaves
# (mesh3): teardown.yml --limit mesh3,localhost while it is still in the inventory (its SAs,
# policies, guards removed and their keys retired), then site.yml with the inventory without it
# (the peers drop what is no longer derived): nothing of mesh3 left on any peer or on itself, the
# 56 directed SAs of the hosts that stay unchanged -> teardown.yml -> no owned SA or policy in any
# namespace, no guard boot file left -> lab reset (namespaces and bridge gone, link0 back).
# Prints a report with timings; exit status 0 only if every step passed.
#
#   bash lab/mesh.sh          # LAB_KEEP=1 keeps the VMs; MESH_FORKS (default 10) Ansible forks
#
# Its own lab pair (LAB_RUN=lab/run/mesh, SSH 2371/2372, link 4551; a running pair with the same
# settings is reused), its own key store ($RUN/keystore-mesh.yml, removed at the start).
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair mesh 2371 2372 4551
INVDIR=$OUT/inventory
INV=$INVDIR/hosts.yml
STORE=$RUN/keystore-mesh.yml
MESHPY=$LAB_DIR/mesh.py
EIGHT=mesh1=1,mesh2=1,mesh3=1,mesh4=1,mesh5=2,mesh6=2,mesh7=2,mesh8=2
NEW=mesh9
NINE=$EIGHT,$NEW=1
GONE=mesh3
STAY=mesh1=1,mesh2=1,mesh4=1,mesh5=2,mesh6=2,mesh7=2,mesh8=2,mesh9=1
PINGS=3
export ANSIBLE_FORKS=${MESH_FORKS:-10}
[[ $ANSIBLE_FORKS =~ ^[1-9][0-9]*$ ]] || die "MESH_FORKS must be a number"

on_in() { local n=$1; shift; ssh -F "$RUN/ssh_config" "lab$n" "$@"; } # stdin passed on
mpy() { "$PY" "$MESHPY" "$@"; }
# the mesh hosts of LAYOUT placed on VM N, as "K K ..." (meshK)
nums_on() { tr ',' '\n' <<< "$1" | awk -F= -v v="$2" '$2 == v {sub(/^mesh/, "", $1); printf "%s%s", s, $1; s = " "}'; }
names_on() { tr ',' '\n' <<< "$1" | awk -F= -v v="$2" '$2 == v {printf "%s%s", s, $1; s = " "}'; }

report_init "lab mesh report"
T0=$(now)

# --- 0. the helper's own test (no VM) ---------------------------------------------------------------
venv_need "$REPO_ROOT/tests/requirements.txt"
t=$(now)
if r=$("$VENV/bin/python" -m pytest -q -p no:cacheprovider "$REPO_ROOT/tests/unit/test_lab_mesh.py" 2>&1 | tail -n 1); then
	record "lab/mesh.py unit test (8 hosts -> 56 directed pairs, ...)" "$r ($(elapsed "$t") s)"
else
	bad "lab/mesh.py unit test" "$r"; exit 1
fi
rm -f "$STORE" "$(dirname "$STORE")/.$(basename "$STORE").run"
lab_start

# --- helpers -----------------------------------------------------------------------------------------
# lab prep on VM N for the hosts K...: modules, br-mesh with link0, per host namespace + veth + address
mesh_prep() {
	local n=$1; shift
	# shellcheck disable=SC2016 # expanded on the VM
	on "$n" 'set -e
for m in bridge veth esp4 xfrm_user; do [ -d /sys/module/$m ] || modprobe $m; done
ip link show br-mesh >/dev/null 2>&1 || ip link add br-mesh type bridge stp_state 0
ip link set br-mesh up
[ "$(basename "$(readlink /sys/class/net/link0/master 2>/dev/null)")" = br-mesh ] || ip link set link0 master br-mesh
ip link set link0 up
for k in '"$*"'; do
	ns=mesh$k
	[ -e /run/netns/$ns ] || ip netns add $ns
	ip link show mb$k >/dev/null 2>&1 || ip link add mb$k type veth peer name veth0 netns $ns
	ip link set mb$k master br-mesh up
	ip -n $ns link set lo up
	ip -n $ns link set veth0 up
	ip -n $ns addr replace 10.77.0.$k/24 dev veth0
done
echo "$(ip -br link show master br-mesh | wc -l) bridge ports, namespaces: $(ip netns list | awk "/^mesh/ {print \$1}" | sort -V | xargs)"'
}
# lab reset on VM N: every mesh namespace (its veth end goes with it), the bridge; link0 back
mesh_reset() {
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'for ns in $(ip netns list | awk "{print \$1}" | grep -E "^mesh[0-9]+$"); do ip netns del $ns; done
for l in $(ip -o link show | awk -F": " "{print \$2}" | cut -d@ -f1 | grep -E "^mb[0-9]+$"); do ip link del $l; done
if ip link show br-mesh >/dev/null 2>&1; then ip link set link0 nomaster; ip link del br-mesh; fi
ip link set link0 up; true'
}
mesh_inventory() { # mesh_inventory LAYOUT
	mkdir -p "$INVDIR"
	mpy inventory "$1" --port "1=$LAB_SSH_PORT1" --port "2=$LAB_SSH_PORT2" \
		--key "$RUN/id_ed25519" --known-hosts "$RUN/known_hosts" --out "$INV"
}
mplay() { # mplay NAME PLAYBOOK [ARGS..]: ansible-playbook with the mesh inventory and key store
	local name=$1 pb=$2 rc=0 log; shift 2
	log="$OUT/$name.log"
	ansible-playbook -i "$INV" -e "ipsec_keystore_path=$STORE" "$REPO_ROOT/$pb" "$@" > "$log" 2>&1 || rc=$?
	awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]}}
		END{printf "changed=%d failed=%d", c, f}' "$log"
	if [ "$rc" != 0 ]; then grep -E '^(fatal|failed):|"msg":' "$log" | cut -c1-400 | head -n 6 >&2; fi
	return "$rc"
}
# snap FILE: the owned SAs and policies of every mesh namespace (all nine: a missing one is named)
snap() {
	local n
	: > "$1"
	for n in 1 2; do
		# shellcheck disable=SC2046 # one word per namespace
		cat "$REPO_ROOT/plugins/module_utils/_xfrm_text.py" "$MESHPY" \
			| on_in "$n" python3 - snapshot $(names_on "$NINE" "$n") >> "$1" || return 1
	done
}
owned_in() { # owned_in FILE NS: "SAs/SPs" of one namespace in a snapshot
	awk -v ns="$2" '$2 == ns && $1 == "SA" {a++} $2 == ns && $1 == "SP" {p++} END {printf "%d/%d", a, p}' "$1"
}
per_host() { # per_host FILE LAYOUT: "meshK SAs/SPs ..." for the hosts of LAYOUT
	local h out=""
	for h in $(tr ',' '\n' <<< "$2" | cut -d= -f1); do out+="$h $(owned_in "$1" "$h"), "; done
	printf '%s' "${out%, }"
}
# every ordered pair of LAYOUT (with HOST at one end when given) pings COUNT times from the sender's
# namespace; both VMs at once. Prints "P pairs, A answered COUNT of COUNT"; the pairs that were not are
# in $OUT/NAME-pings.txt and on stderr; returns 1 unless every pair got every reply.
# shellcheck disable=SC2016 # expanded on the VM
PING_SH='c=$1
while read -r a b _ ip _; do
	r=$(ip netns exec "$a" ping -c "$c" -i 0.2 -W 2 -q "$ip" < /dev/null 2>/dev/null | sed -n "s/.*, \([0-9]*\) received.*/\1/p")
	echo "$a $b ${r:-0}"
done'
pings() { # pings NAME COUNT LAYOUT [HOST]
	local name=$1 count=$2 layout=$3 involving=${4:-} n pids=() all
	mpy pairs "$layout" ${involving:+--involving "$involving"} > "$OUT/$name-pairs.txt" || return 1
	for n in 1 2; do
		# (one remote command string: PING_SH holds no single quote)
		awk -v v="$n" '$3 == v' "$OUT/$name-pairs.txt" | on_in "$n" "bash -c '$PING_SH' _ $count" > "$OUT/$name-pings-$n.txt" &
		pids+=($!)
	done
	for n in "${pids[@]}"; do wait "$n" || return 1; done
	cat "$OUT/$name-pings-1.txt" "$OUT/$name-pings-2.txt" > "$OUT/$name-pings.txt"
	all=$(wc -l < "$OUT/$name-pairs.txt")
	awk -v c="$count" '$3 != c {print "  " $1 " -> " $2 ": " $3 " of " c " answered"}' "$OUT/$name-pings.txt" >&2
	awk -v c="$count" -v all="$all" '$3 == c {ok++} END {printf "%d pairs, %d answered %d of %d", all, ok, c, c; exit !(NR == all && ok == all)}' \
		"$OUT/$name-pings.txt"
}
# capture on lab1's link0 (the wire between the VMs) while pings run; wire_stop NAME prints "E ESP, C other IPv4"
wire_start() {
	# shellcheck disable=SC2016 # expanded on the VM
	on 1 'rm -f /tmp/mesh-wire.pcap; nohup timeout 900 tcpdump -B 16384 -n -i link0 -w /tmp/mesh-wire.pcap ip > /tmp/mesh-wire.err 2>&1 &
echo $! > /tmp/mesh-wire.pid' && sleep 2
}
wire_stop() {
	local wire esp clear dropped
	# shellcheck disable=SC2016 # expanded on the VM
	wire=$(on 1 'sleep 1; kill -INT $(cat /tmp/mesh-wire.pid) 2>/dev/null; sleep 2; tcpdump -r /tmp/mesh-wire.pcap -n 2>/dev/null')
	printf '%s\n' "$wire" > "$OUT/$1-wire.txt"
	esp=$(grep -c 'ESP(spi=' <<< "$wire" || true)
	clear=$(grep -E '^[0-9]{2}:[0-9]{2}:' <<< "$wire" | grep -vc 'ESP(spi=' || true)
	dropped=$(on 1 'cat /tmp/mesh-wire.err' | sed -n 's/^\([0-9]*\) packets dropped by kernel.*/\1/p')
	echo "$esp ESP, $clear other IPv4, ${dropped:-?} dropped by the kernel"
}
# directed pairs of LAYOUT whose sender and receiver sit on different VMs
cross_vm() { mpy pairs "$1" | awk '$3 != $5' | wc -l; }
boot_files() { # boot_files N: the guard boot files left on VM N ("none" when there is none)
	local f
	f=$(on "$1" 'ls /etc/ipsec_offload_mlx5/guards/ 2>/dev/null; [ -e /usr/local/sbin/ipsec-offload-mlx5-guards ] && echo "+script"; true' | xargs)
	echo "${f:-none}"
}

# --- the suite -----------------------------------------------------------------------------------------
suite() {
	local t r n f e

	# 1. lab prep: bridge + 8 namespaces; every ordered pair reaches the other (in clear, no SA yet)
	t=$(now)
	for n in 1 2; do mesh_reset "$n" || { bad "lab$n reset before the run" "ssh failed"; return 1; }; done
	for n in 1 2; do
		# shellcheck disable=SC2046 # one word per host number
		r=$(mesh_prep "$n" $(nums_on "$EIGHT" "$n")) || { bad "lab$n mesh prep" "failed"; return 1; }
		record "lab$n br-mesh (link0 + veths)" "$r"
	done
	r=$(pings clear 1 "$EIGHT") || { bad "every ordered pair pings in clear (1 each)" "$r (see $OUT/clear-pings.txt)"; return 1; }
	record "lab prep: 8 namespaces, every ordered pair pings in clear" "$r ($(elapsed "$t") s)"

	# 2. converge the 8-host mesh
	mesh_inventory "$EIGHT" || { bad "inventory (8 hosts)" "mesh.py inventory failed"; return 1; }
	t=$(now); r=$(mplay converge8 playbooks/site.yml) || { bad "site.yml converge (8 hosts)" "$r (log $OUT/converge8.log)"; return 1; }
	record "site.yml converge, 8 hosts" "$r ($(elapsed "$t") s)"
	snap "$OUT/s8-converged.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy check "$EIGHT" "$OUT/s8-converged.txt") || { bad "8-host mesh on the hosts" "$r"; return 1; }
	record "the 8-host mesh on the hosts" "$r"
	record "  owned SAs/SPs per host" "$(per_host "$OUT/s8-converged.txt" "$EIGHT")"

	# 3. every ordered pair pings through its SAs; the 56 directed SAs count on both ends
	t=$(now)
	wire_start || { bad "capture on lab1 link0" "tcpdump did not start"; return 1; }
	r=$(pings esp8 "$PINGS" "$EIGHT") || { wire_stop esp8 > /dev/null; bad "every ordered pair pings through its SAs" "$r"; return 1; }
	e=$(wire_stop esp8)
	record "every ordered pair pings through its SAs ($PINGS each)" "$r ($(elapsed "$t") s)"
	snap "$OUT/s8-traffic.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy traffic "$EIGHT" "$OUT/s8-converged.txt" "$OUT/s8-traffic.txt") || { bad "per-SA counters, 8 hosts" "$r"; return 1; }
	record "per-SA packet counters (ip -s xfrm state, each namespace)" "$r"
	f=$(( $(cross_vm "$EIGHT") * 2 * PINGS ))
	record "lab1 link0 capture during the pings (>= $f ESP expected)" "$e"
	read -r n _ r _ < <(tr ',' ' ' <<< "$e")
	{ [ "$r" = 0 ] && { [ "$n" -ge "$f" ] || [[ $e != *", 0 dropped"* ]]; }; } || { bad "only ESP between the VMs" "see $OUT/esp8-wire.txt"; return 1; }

	# 4. second run: nothing to change
	t=$(now); r=$(mplay idempotence8 playbooks/site.yml) || { bad "site.yml second run" "$r"; return 1; }
	[ "$r" = "changed=0 failed=0" ] || { bad "site.yml second run (must be changed=0)" "$r (log $OUT/idempotence8.log)"; return 1; }
	record "site.yml second run (must be changed=0)" "$r ($(elapsed "$t") s)"

	# 5. a ninth host: nothing renumbered, its 16 directed SAs carry traffic
	t=$(now)
	r=$(mesh_prep 1 "${NEW#mesh}") || { bad "lab1 prep of $NEW" "failed"; return 1; }
	r=$(pings clear9 1 "$NINE" "$NEW") || { bad "$NEW pings every host in clear" "$r"; return 1; }
	record "lab prep: $NEW on lab1, pings every host in clear" "$r ($(elapsed "$t") s)"
	snap "$OUT/s8-before9.txt" || { bad "snapshot" "ssh failed"; return 1; }
	mesh_inventory "$NINE" || { bad "inventory (9 hosts)" "mesh.py inventory failed"; return 1; }
	t=$(now); r=$(mplay converge9 playbooks/site.yml) || { bad "site.yml with $NEW added" "$r (log $OUT/converge9.log)"; return 1; }
	record "site.yml, $NEW added (9 hosts)" "$r ($(elapsed "$t") s)"
	snap "$OUT/s9-converged.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy check "$NINE" "$OUT/s9-converged.txt") || { bad "9-host mesh on the hosts" "$r"; return 1; }
	record "the 9-host mesh on the hosts" "$r"
	r=$(mpy kept "$EIGHT" "$OUT/s8-before9.txt" "$OUT/s9-converged.txt") || { bad "no existing pair renumbered" "$r"; return 1; }
	record "existing pairs after $NEW joined" "$r"
	t=$(now)
	r=$(pings esp9 "$PINGS" "$NINE" "$NEW") || { bad "$NEW's pairs ping through their SAs" "$r"; return 1; }
	record "$NEW's ordered pairs ping through their SAs" "$r ($(elapsed "$t") s)"
	snap "$OUT/s9-traffic.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy traffic "$NINE" "$OUT/s9-converged.txt" "$OUT/s9-traffic.txt" --involving "$NEW") || { bad "per-SA counters of $NEW's SAs" "$r"; return 1; }
	record "per-SA packet counters of $NEW's directed SAs" "$r"

	# 6. a host leaves: torn down while still in the inventory, then site.yml without it
	t=$(now); r=$(mplay teardown-$GONE playbooks/teardown.yml --limit "$GONE,localhost") \
		|| { bad "teardown.yml --limit $GONE,localhost" "$r (log $OUT/teardown-$GONE.log)"; return 1; }
	record "teardown.yml --limit $GONE,localhost (9-host inventory)" "$r ($(elapsed "$t") s)"
	snap "$OUT/s9-gone-torn.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(owned_in "$OUT/s9-gone-torn.txt" "$GONE")
	[ "$r" = 0/0 ] || { bad "$GONE has no owned SA/SP after its teardown" "$r"; return 1; }
	record "  $GONE owned SAs/SPs after its teardown; lab1 guard boot files" "$r; $(boot_files 1)"
	mesh_inventory "$STAY" || { bad "inventory (without $GONE)" "mesh.py inventory failed"; return 1; }
	t=$(now); r=$(mplay converge-without-$GONE playbooks/site.yml) || { bad "site.yml without $GONE" "$r (log $OUT/converge-without-$GONE.log)"; return 1; }
	record "site.yml, $GONE removed from the inventory (8 hosts)" "$r ($(elapsed "$t") s)"
	snap "$OUT/s8-after-gone.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy check "$STAY" "$OUT/s8-after-gone.txt" --gone "$GONE") || { bad "$GONE gone on every peer and on itself" "$r"; return 1; }
	record "the mesh without $GONE on the hosts" "$r"
	record "  owned SAs/SPs per host" "$(per_host "$OUT/s8-after-gone.txt" "$STAY,$GONE=1")"
	r=$(mpy kept "$STAY" "$OUT/s9-traffic.txt" "$OUT/s8-after-gone.txt") || { bad "the pairs that stay are unchanged" "$r"; return 1; }
	record "pairs of the hosts that stay, after $GONE left" "$r"

	# 7. teardown: nothing owned left anywhere
	t=$(now); r=$(mplay teardown playbooks/teardown.yml) || { bad "teardown.yml" "$r (log $OUT/teardown.log)"; return 1; }
	record "teardown.yml (8 hosts)" "$r ($(elapsed "$t") s)"
	snap "$OUT/s-teardown.txt" || { bad "snapshot" "ssh failed"; return 1; }
	r=$(mpy empty "$OUT/s-teardown.txt") || { bad "nothing owned left after teardown" "$r"; return 1; }
	f="lab1: $(boot_files 1); lab2: $(boot_files 2)"
	record "after teardown, all 9 namespaces" "$r; guard boot files: $f"
	[ "$f" = "lab1: none; lab2: none" ] || { bad "guard boot files left after teardown" "$f"; return 1; }

	# 8. lab reset
	t=$(now)
	for n in 1 2; do mesh_reset "$n" || { bad "lab$n reset" "ssh failed"; return 1; }; done
	for n in 1 2; do
		# shellcheck disable=SC2016 # expanded on the VM
		r=$(on "$n" 'm=$(readlink /sys/class/net/link0/master 2>/dev/null || true)
echo "namespaces $(ip netns list | grep -c "^mesh" || true), bridge $(ip link show br-mesh >/dev/null 2>&1 && echo present || echo absent),' \
			'link0 master ${m##*/}$(ip -br -4 addr show dev link0 | awk "{print \", \" \$3}")"')
		r=${r/master ,/master none,}
		record "lab$n after reset" "$r"
		[[ $r == "namespaces 0, bridge absent, link0 master none, 192.168.100.$n/24" ]] || { bad "lab$n reset" "$r"; return 1; }
	done
	r=$(on 1 'ping -c 2 -W 2 -q 192.168.100.2 | sed -n "s/.*, \([0-9]*\) received.*/\1/p"')
	[ "$r" = 2 ] || { bad "lab1 -> lab2 over link0 after the reset" "$r of 2 answered"; return 1; }
	record "lab reset (lab1 pings lab2 over link0 again)" "$r of 2 answered ($(elapsed "$t") s)"
}

if ! suite; then
	# best effort: leave the pair clean
	[ ! -s "$INV" ] || mplay teardown-after-failure playbooks/teardown.yml > /dev/null 2>&1 || true
	for n in 1 2; do mesh_reset "$n" > /dev/null 2>&1 || true; done
	FAILED=1
fi
record "total" "$(elapsed "$T0") s"
