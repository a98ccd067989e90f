#!/usr/bin/env bash
# The main job, on the built-in lab: set everything up, boot the two-VM pair, converge the
# collection's site.yml on it (derive -> preflight -> IPsec states/policies), prove idempotence
# (second run changed=0), send traffic and compare per-SA counters on both peers (verify.yml),
# tear down (owned objects only, a foreign SA planted beforehand must survive), and print a report
# with one row per peer; then both vendor topologies on the same pair (lab/topologies.sh): the VXLAN
# overlay and RoCE over VF, both with packet offload on the lab's simulated ConnectX (vxlan-sim,
# roce-sim: the VF's own netdev carries the SAs).
#
#   bash lab/demo.sh            # LAB_KEEP=1 keeps the VMs running afterwards;
#                               # DEMO_TOPOLOGIES="" skips the topologies, "vxlan-sim"/"roce-sim" runs one,
#                               # "vxlan"/"roce" the topology with software ESP on the VF stand-ins
#
# The lab has no mlx5 NIC: the lab inventory (inventories/examples/lab) sets ipsec_offload: none,
# i.e. software ESP on the real trixie kernel. Exit status 0 only if every step passed.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"    # now, elapsed, on, owned_sas/sps/packets, verify_table (the rest is the demo's own)
RUN=${LAB_RUN:-$LAB_DIR/run}
OUT=$RUN/demo
mkdir -p "$OUT"

declare -a REPORT=()
# each step is shown as it finishes (stderr, with the time since the start), the report repeats them
record() {
	REPORT+=("$(printf '%-44s %s' "$1" "$2")")
	printf '[demo t+%ss] %-44s %s\n' "$(elapsed "${T0:-$(now)}")" "$1" "$2" >&2
}
finish() {
	local rc=$?
	printf '\n===== lab demo report =====\n'
	printf '%s\n' "${REPORT[@]}"
	if [ "${#PEERS[@]}" -gt 0 ]; then
		printf '\nper peer (owned = reqid 0x51c00000-0x51c0ffff; packets = sum over the owned SAs, before -> after verify.yml + the wire check):\n'
		printf '%-6s %6s %6s %9s %9s %7s %6s %8s %10s %s\n' peer SAs SPs before after delta need 'ESP seen' 'left after' pass
		printf '%s\n' "${PEERS[@]}"
	fi
	if [ "$rc" -eq 0 ]; then printf 'RESULT: PASS\n'; else printf 'RESULT: FAIL (rc=%s; logs in %s)\n' "$rc" "$OUT"; fi
	if [ "${LAB_KEEP:-0}" != 1 ]; then bash "$LAB_DIR/lab.sh" down >/dev/null 2>&1 || true; fi
	exit "$rc"
}
trap finish EXIT

T0=$(now)
t=$(now); bash "$LAB_DIR/lab.sh" setup; bash "$LAB_DIR/lab.sh" build; record "lab setup + image (cached when unchanged)" "$(elapsed "$t") s"
venv_need "$REPO_ROOT/tests/requirements.txt"
t=$(now); bash "$LAB_DIR/lab.sh" up; record "boot both VMs to SSH" "$(elapsed "$t") s"

# The collection, as Ansible sees an installed one: a symlink farm onto the work tree.
COLL=$RUN/collections
mkdir -p "$COLL/ansible_collections/ipsec_offload"
ln -sfn "$REPO_ROOT" "$COLL/ansible_collections/ipsec_offload/mlx5"
export ANSIBLE_COLLECTIONS_PATH=$COLL ANSIBLE_PIPELINING=1 ANSIBLE_HOST_KEY_CHECKING=False \
	ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0
INV=(-i "$RUN/inventory.yml" -i "$REPO_ROOT/inventories/examples/lab")
EXTRA=(-e "ipsec_keystore_path=$RUN/keystore.yml")
play() { # play NAME PLAYBOOK [args...]: run, keep the log, return the recap's changed/failed sums
	local name=$1 pb=$2; shift 2
	local log="$OUT/$name.log"
	if ! ansible-playbook "${INV[@]}" "${EXTRA[@]}" "$REPO_ROOT/$pb" "$@" > "$log" 2>&1; then
		tail -n 40 "$log" >&2
		die "$name: ansible-playbook $pb failed (log: $log)"
	fi
	awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]}} END{printf "changed=%d failed=%d", c, f}' "$log"
}

# A foreign SA + policy (as another IKE daemon would install them; reqid 7, outside the owned range).
# shellcheck disable=SC2016 # expanded on the VM, not here
on 1 'modprobe esp4 2>/dev/null; ip xfrm state add src 192.168.100.1 dst 192.168.100.99 proto esp spi 0x7777 reqid 7 mode transport aead "rfc4106(gcm(aes))" 0x$(head -c 20 /dev/urandom | od -An -tx1 | tr -d " \n") 128 && ip xfrm policy add src 192.168.100.1/32 dst 192.168.100.99/32 dir out tmpl src 192.168.100.1 dst 192.168.100.99 proto esp reqid 7 mode transport' \
	|| die "could not plant the foreign SA on lab1"
# the foreign SA and policy as the collection's parser reads them, without counters (lab/owned.py)
foreign_objects() {
	on 1 'ip xfrm state list nokeys src 192.168.100.1 dst 192.168.100.99' | python3 "$LAB_DIR/owned.py" sa-objects --all
	on 1 'ip xfrm policy list dst 192.168.100.99/32' | python3 "$LAB_DIR/owned.py" sp-objects --all
}
foreign_before=$(foreign_objects)
[ "$(grep -c . <<< "$foreign_before")" = 2 ] || die "the foreign SA/policy planted on lab1 do not read back as one SA and one policy"

# Keys are created on the controller only (no host is contacted); check mode never writes the store.
t=$(now); r=$(play derive playbooks/derive.yml); record "derive.yml (controller: pairs + key store)" "$r ($(elapsed "$t") s)"
t=$(now); r=$(play check site.yml --check --diff); record "site.yml --check --diff" "$r ($(elapsed "$t") s)"
[ "$(owned_sas 1)" = 0 ] || die "check mode changed lab1"
t=$(now); r=$(play converge site.yml); record "site.yml converge" "$r ($(elapsed "$t") s)"
case "$r" in *failed=0) ;; *) die "converge failed: $r" ;; esac
t=$(now); r=$(play idempotence site.yml); record "site.yml second run (must be changed=0)" "$r ($(elapsed "$t") s)"
[ "$r" = "changed=0 failed=0" ] || die "second run was not idempotent: $r"

declare -a PEERS=() SAS=() SPS=() ALL=() BEFORE=() AFTER=() ESP=()
for n in 1 2; do
	SAS[n]=$(owned_sas "$n"); SPS[n]=$(owned_sps "$n"); BEFORE[n]=$(owned_packets "$n")
	ALL[n]="$(all_sas "$n") SAs / $(all_sps "$n") policies"
done
t=$(now); r=$(play verify playbooks/verify.yml -e verify_count=10); record "verify.yml (10 pings each way)" "$r ($(elapsed "$t") s)"
verify_table "$OUT/verify.log" > "$OUT/verify-summary.txt" || true
for n in 1 2; do
	# shellcheck disable=SC2016 # $((...)) is expanded on the VM
	on "$n" 'tcpdump -c 4 -n -i link0 esp 2>/dev/null & sleep 0.5; ping -c 3 -i 0.2 -W 2 192.168.100.$((3 - '"$n"')) >/dev/null; wait' > "$OUT/lab$n-wire.txt" 2>&1 || true
	ESP[n]=$(grep -c ESP "$OUT/lab$n-wire.txt" || true)
done
for n in 1 2; do AFTER[n]=$(owned_packets "$n"); done
record "verify table (per SA)" "$OUT/verify-summary.txt"

t=$(now); r=$(play teardown playbooks/teardown.yml); record "teardown.yml" "$r ($(elapsed "$t") s)"
# One row per peer. need: verify.yml sends 10 pings each way (request + reply through the owned SAs
# of both peers: 40 packets) and the wire check 3 pings each way (12): >= 52 more packets.
fail=0
for n in 1 2; do
	left=$(owned_sas "$n")
	delta=$((AFTER[n] - BEFORE[n])) verdict=PASS
	{ [ "${SAS[n]}" -ge 2 ] && [ "${SPS[n]}" -ge 2 ] && [ "$delta" -ge 52 ] && [ "${ESP[n]}" -ge 4 ] && [ "$left" = 0 ]; } || { verdict=FAIL; fail=1; }
	PEERS+=("$(printf '%-6s %6s %6s %9s %9s %7s %6s %8s %10s %s' "lab$n" "${SAS[n]}" "${SPS[n]}" "${BEFORE[n]}" "${AFTER[n]}" "$delta" 52 "${ESP[n]}" "$left" "$verdict")")
	record "lab$n all SAs / policies when converged" "${ALL[n]}"
done
[ "$fail" = 0 ] || die "a peer failed (see the per-peer table)"
foreign_after=$(foreign_objects)
[ "$foreign_before" = "$foreign_after" ] || die "the foreign SA/policy on lab1 changed"
record "foreign SA + policy on lab1" "intact"
on 1 'ip xfrm policy delete src 192.168.100.1/32 dst 192.168.100.99/32 dir out; ip xfrm state delete src 192.168.100.1 dst 192.168.100.99 proto esp spi 0x7777' || true

# Then both vendor topologies on the same pair: lab/topologies.sh (VXLAN overlay + OVS with packet
# offload on the simulated ConnectX, nic_prep setting dmfs + switchdev; RoCE over VF with packet
# offload on the sim's VF netdev + QinQ tc + RoCE v2 through ESP) prints its own report above this
# one. DEMO_TOPOLOGIES="" skips it; "vxlan-sim" or "roce-sim" runs one. The topologies' extra --check on the converged pair is left out
# here (TOPO_CHECK_CONVERGED=1 puts it back; bash lab/topologies.sh runs it): the second run's
# changed=0 stays, and it keeps .ci/run's lane A shorter.
DEMO_TOPOLOGIES=${DEMO_TOPOLOGIES-vxlan-sim roce-sim}
if [ -n "$DEMO_TOPOLOGIES" ]; then
	t=$(now)
	LAB_RUN=$RUN LAB_SSH_PORT1=${LAB_SSH_PORT1:-2231} LAB_SSH_PORT2=${LAB_SSH_PORT2:-2232} \
		LAB_LINK_PORT=${LAB_LINK_PORT:-4411} LAB_KEEP=1 TOPOLOGIES=$DEMO_TOPOLOGIES TOPO_CHECK_CONVERGED=${TOPO_CHECK_CONVERGED:-0} \
		bash "$LAB_DIR/topologies.sh" || die "lab/topologies.sh failed (its report is above)"
	record "topologies: $DEMO_TOPOLOGIES (lab/topologies.sh)" "PASS, report above ($(elapsed "$t") s)"
fi
record "total" "$(elapsed "$T0") s"
