#!/usr/bin/env bash
# The lab half of the reliability suite (issue 7 items 1, 4, 5, 6) on a real kernel, with figures:
#   1 keys      argv of every process on both VMs sampled every 20 ms during the whole suite; the
#               output of every playbook run (site/rekey/teardown with -vvvv, --check --diff, --diff),
#               the module results (ansible.builtin.tree callback), the rendered scripts, the argv
#               samples and the VMs' files are searched for every key (hex of key||salt, hex of the
#               key without the 4-byte salt, base64 of both); the key store must be 0600 (dir 0700)
#   4 interrupt the playbook (SIGKILL, SIGINT) and the SSH connection (the controller's ssh client,
#               the VM's sshd session) during converge and during rekey; each time a re-run must
#               report changed>0, then site.yml --check --diff changed=0, and the owned SAs/SPs must equal what the
#               derivation expects (rendered by render.yml): no duplicate, no orphan
#   5 foreign   SAs, policies and tc rules planted on both VMs before converge (reqid 2/7, other SPIs,
#               tc prefs without our cookie) must stay byte-for-byte identical (`ip xfrm`/`tc` dumps
#               without -s, owned objects left out, each object one sorted line) after converge,
#               overridden (a stray owned SA removed), tc_flower_vlan overridden/deleted, rekey and teardown
#   6 lock      two site.yml at once, then site.yml + teardown.yml at once: the result must be what
#               the last module run per host implies (from the timestamped logs), no duplicate; and a
#               module run against a held lock must fail naming the holder's PID, host unchanged
# Writes the figures into docs/reliability.md (the section between the "lab-reliability" markers)
# and prints them; exit 0 only if every figure holds.
#
#   bash lab/reliability.sh            # LAB_KEEP=1 keeps the VMs; REL_WRITE_DOC=0 does not touch docs/
#
# Own pair: LAB_RUN=lab/run/reliability, SSH 2281/2282, link 4461. Inventory: inventories/examples/lab.
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$LAB_DIR/lib.sh"
lab_pair reliability 2281 2282 4461
export LAB_SSH_TIMEOUT=${LAB_SSH_TIMEOUT:-600}
INV=lab
STORE=$RUN/keys/keystore-lab.yml  # the directory is created by the collection (0700)
DOC=$REPO_ROOT/docs/reliability.md
KEYS=$OUT/keys.hex
umask 077

report_init "lab reliability report"
T0=$(now)
rm -rf "$OUT" && mkdir -p "$OUT"
: > "$KEYS"
: > "$OUT/facts.jsonl"

helper() { REL_XFRM_TEXT="$REPO_ROOT/plugins/module_utils/_xfrm_text.py" python3 "$REPO_ROOT/tests/lab/reliability_lib.py" "$@"; }
pl() { local name=$1; shift; play "$name" "$INV" "$@" -e "ipsec_keystore_path=$STORE"; }
flag() { bad "$@" || true; } # a failed step of the suite's own plumbing; the suite goes on
# The checks are tests/lab/test_reliability.py (pytest, run at the end on what this script leaves in
# $OUT): this script drives the VMs and writes the evidence, one JSON line per fact into
# $OUT/facts.jsonl (kind, name, then key=value: numbers as numbers), and the files they name.
FACTS=$OUT/facts.jsonl
fact() { # fact KIND NAME [KEY=VALUE ...]
	python3 -c 'import json, sys
d = {"kind": sys.argv[1], "name": sys.argv[2]}
for a in sys.argv[3:]:
    k, _, v = a.partition("=")
    d[k] = int(v) if v.lstrip("-").isdigit() else v
print(json.dumps(d))' "$@" >> "$FACTS"
}
# REL_STAGES: which optional stages run (default all); the key search, the foreign checks, the
# held-lock refusal and teardown.yml always run
STAGES_ALL="conv-sigkill conv-sshclient tc rekey-sigint rekey-sshd conc-site-site conc-site-teardown"
REL_STAGES=${REL_STAGES:-all}
[ "$REL_STAGES" = all ] && REL_STAGES=$STAGES_ALL
for s_ in $REL_STAGES; do [[ " $STAGES_ALL " == *" $s_ "* ]] || die "REL_STAGES: unknown stage '$s_' ($STAGES_ALL)"; done
STAGES_RUN=""
stage() { [[ " $REL_STAGES " == *" $1 "* ]] || return 1; STAGES_RUN="$STAGES_RUN $1"; }

lab_start
export ANSIBLE_TIMEOUT=60
PB_INV=(-i "$RUN/inventory.yml" -i "$REPO_ROOT/inventories/examples/$INV" -e "ipsec_keystore_path=$STORE")
sum_recap() { awk '/^PLAY RECAP/{r=1; next} r && /changed=/{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")c+=a[2]; if(a[1]=="failed")f+=a[2]; if(a[1]=="unreachable")u+=a[2]}} END{printf "changed=%d failed=%d", c, f+u}' "$1"; }
changed_of() { local x=${1#changed=}; echo "${x%% *}"; }
# -vvvv runs also keep every module result as JSON (ansible.builtin.tree)
vplay() { local name=$1; shift; ANSIBLE_CALLBACKS_ENABLED=ansible.builtin.tree ANSIBLE_CALLBACK_TREE_DIR=$OUT/results/$name pl "$name" "$@" -vvvv; }

# ---------------------------------------------------------------------------------------------
# state readers
host_idents() { on "$1" 'echo "#REL states"; ip xfrm state list nokeys; echo "#REL policies"; ip xfrm policy list' | helper host; }
# the objects of labN that are not ours, one line each, read by the collection's parsers (lab/owned.py):
# SAs and policies (parsed, counters left out, a key as its hash), the tc rules without the
# collection's cookie and the ingress qdiscs of link0 / vf0_rep (`tc -j`)
foreign_of() {
	local owned=$LAB_DIR/owned.py
	on "$1" 'ip xfrm state list' | python3 "$owned" sa-objects --foreign | sed 's/^/states| /'
	on "$1" 'ip xfrm policy list' | python3 "$owned" sp-objects --foreign | sed 's/^/policies| /'
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'for d in link0 vf0_rep; do echo "#dev $d"; tc -j qdisc show dev $d; done' | python3 "$owned" qdiscs | sed 's/^/tc qdisc| /'
	# shellcheck disable=SC2016 # expanded on the VM
	on "$1" 'for d in link0 vf0_rep; do echo "#dev $d"; tc -j filter show dev $d ingress 2>/dev/null; done' \
		| python3 "$owned" tc-objects --foreign | sed 's/^/tc ingress| /'
}
foreign_snapshot() { local n; for n in 1 2; do foreign_of "$n" | sed "s/^/lab$n| /"; done; }
collect_keys() { # owned keys in the kernels and in the key store -> $KEYS (never printed)
	local n
	{ cat "$KEYS"; for n in 1 2; do on "$n" 'ip xfrm state list' | helper keys; done
		if [ -f "$STORE" ]; then helper keystore "$STORE"; fi; } | tr 'A-F' 'a-f' | sed '/^$/d' | sort -u > "$KEYS.new"
	mv "$KEYS.new" "$KEYS"
}

FOREIGN_CHECKS=0
foreign_check() { # foreign_check LABEL: a snapshot for test_foreign_objects_intact (against foreign-0.txt)
	FOREIGN_CHECKS=$((FOREIGN_CHECKS + 1))
	local f=$OUT/foreign-$FOREIGN_CHECKS.txt
	foreign_snapshot > "$f"
	fact foreign "$1" file="$f"
	record "foreign objects after $1" "$(wc -l < "$f") lines taken"
}

# owned SAs/SPs against what the derivation expects now (render.yml, keys masked)
EXPECT_N=0
expect_check() { # expect_check LABEL [sa|sp filter per host: "lab1:sa,sp lab2:sp"]: for test_owned_objects_as_derived
	local label=$1 want=${2:-} n r rc=0 kinds
	EXPECT_N=$((EXPECT_N + 1))
	local dir=$OUT/render-$EXPECT_N
	r=$(pl "render-$EXPECT_N" playbooks/render.yml -e "ipsec_render_dir=$dir") || rc=$?
	fact render "$label" rc="$rc" summary="$r"
	[ "$rc" = 0 ] || return 0
	for n in 1 2; do
		kinds="sa sp"
		if [ -n "$want" ]; then kinds=$(tr ' ' '\n' <<< "$want" | sed -n "s/^lab$n://p" | tr ',' ' '); fi
		helper render "$dir/lab$n.xfrm.sh" | { grep -E "^($(tr ' ' '|' <<< "${kinds:-none}")) " || true; } > "$OUT/expect-$EXPECT_N-lab$n.txt"
		host_idents "$n" > "$OUT/got-$EXPECT_N-lab$n.txt"
		fact expect "$label" host="lab$n" kinds="${kinds:-none}" expect="$OUT/expect-$EXPECT_N-lab$n.txt" got="$OUT/got-$EXPECT_N-lab$n.txt"
		record "$label: lab$n owned SAs/SPs (${kinds:-none})" "$(grep -c '^sa' "$OUT/got-$EXPECT_N-lab$n.txt" || true) SAs, $(grep -c '^sp' "$OUT/got-$EXPECT_N-lab$n.txt" || true) SPs"
	done
}

# ---------------------------------------------------------------------------------------------
# 0. foreign state (as strongSwan would install it) and the argv samplers
# shellcheck disable=SC2016 # expanded on the VM
PLANT='set -e; A=192.168.100.$N; P=192.168.100.$((3 - N)); k() { echo 0x$(head -c 20 /dev/urandom | od -An -tx1 | tr -d " \n"); }
modprobe -a esp4 xfrm_user cls_flower cls_u32 act_gact 2>/dev/null || true
ip -batch - <<EOF
xfrm state add src $A dst 192.168.100.99 proto esp spi 0x7770000$N reqid 7 mode transport aead rfc4106(gcm(aes)) $(k) 128
xfrm state add src 192.168.100.99 dst $A proto esp spi 0x7771000$N reqid 7 mode transport aead rfc4106(gcm(aes)) $(k) 128
xfrm state add src $A dst $P proto esp spi 0xc0de000$N reqid 2 mode transport aead rfc4106(gcm(aes)) $(k) 128 sel src $A/32 dst $P/32 proto udp dport 4500
xfrm policy add src $A/32 dst 192.168.100.99/32 dir out tmpl src $A dst 192.168.100.99 proto esp reqid 7 mode transport
xfrm policy add src 192.168.100.99/32 dst $A/32 dir in tmpl src 192.168.100.99 dst $A proto esp reqid 7 mode transport
xfrm policy add src $A/32 dst $P/32 proto udp sport 500 dport 500 dir out priority 10 action allow
xfrm policy add src $P/32 dst $A/32 proto udp sport 500 dport 500 dir in priority 10 action allow
EOF
tc qdisc add dev link0 ingress
tc filter add dev link0 ingress pref 49001 protocol ip flower dst_ip 192.168.100.99 action gact pass cookie 0102030405060708
tc filter add dev link0 ingress pref 49002 protocol ip u32 match ip dst 192.168.100.98/32 action gact pass
tc filter add dev link0 ingress pref 49003 protocol ip flower ip_proto udp dst_port 9 action gact pass'
# shellcheck disable=SC2016 # expanded on the VM
UNPLANT='A=192.168.100.$N; P=192.168.100.$((3 - N))
ip xfrm policy delete src $A/32 dst 192.168.100.99/32 dir out; ip xfrm policy delete src 192.168.100.99/32 dst $A/32 dir in
ip xfrm policy delete src $A/32 dst $P/32 proto udp sport 500 dport 500 dir out; ip xfrm policy delete src $P/32 dst $A/32 proto udp sport 500 dport 500 dir in
ip xfrm state delete src $A dst 192.168.100.99 proto esp spi 0x7770000$N; ip xfrm state delete src 192.168.100.99 dst $A proto esp spi 0x7771000$N
ip xfrm state delete src $A dst $P proto esp spi 0xc0de000$N
for p in 49001 49002 49003; do tc filter del dev link0 ingress pref $p; done; tc qdisc del dev link0 ingress; true'
SAMPLER='import os, signal, sys, time
out, iv = sys.argv[1], float(sys.argv[2])
seen, n, reads, stop, me, kthreads = {}, 0, 0, [], str(os.getpid()), set()
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    pids = [p for p in os.listdir("/proc") if p.isdigit() and p != me]
    kthreads &= set(pids)  # kernel threads (no argv, ever) are not read again while they live
    for p in pids:
        if p in kthreads:
            continue
        try:
            fd = os.open("/proc/%s/cmdline" % p, os.O_RDONLY)
            try:
                c = os.read(fd, 65536)
            finally:
                os.close(fd)
        except OSError:
            continue
        if c:
            reads += 1
            seen[c] = seen.get(c, 0) + 1
        elif not os.path.exists("/proc/%s/exe" % p):  # a kernel thread (or a zombie)
            kthreads.add(p)
    n += 1
    time.sleep(iv)
with open(out + ".tmp", "wb") as fh:
    fh.write(b"#samples %d argv-reads %d distinct %d\n" % (n, reads, len(seen)))
    for c in seen:
        fh.write(c.replace(b"\0", b" ") + b"\n")
os.rename(out + ".tmp", out)'

lab_reset
if [ "$(owned_sas 1)$(owned_sas 2)$(owned_sps 1)$(owned_sps 2)" != 0000 ]; then # a reused pair
	# (the modules themselves, owned objects only: faster than teardown.yml on a loaded machine)
	for m in xfrm_offload_policy xfrm_offload_state; do
		ansible -i "$RUN/inventory.yml" lab -m "ipsec_offload.mlx5.$m" -a '{"config": [], "state": "deleted"}' > "$OUT/pre-clean-$m.log" 2>&1 \
			|| { bad "reused pair: remove owned SPs/SAs" "see $OUT/pre-clean-$m.log"; exit 1; }
	done
	record "reused pair: owned SPs/SAs removed first" "$(owned_sas 1)$(owned_sas 2)$(owned_sps 1)$(owned_sps 2) left"
fi
for n in 1 2; do
	# leftovers of an earlier, aborted suite run on a reused pair
	on "$n" "N=$n; $UNPLANT" > /dev/null 2>&1 || true
	on "$n" "N=$n; $PLANT" || { bad "lab$n: plant foreign state" "failed"; exit 1; }
	ssh -F "$RUN/ssh_config" "lab$n" 'cat > /root/rel-sampler.py' <<< "$SAMPLER"
	# a sampler left by an aborted suite run (its PID file) is stopped first: it would eat the VM's CPU
	# shellcheck disable=SC2016 # expanded on the VM
	on "$n" 'p=$(cat /root/rel-sampler.pid 2>/dev/null); if [ -n "$p" ] && grep -q rel-sampler "/proc/$p/cmdline" 2>/dev/null; then kill "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; fi
		rm -f /root/rel-argv.txt; setsid nohup python3 /root/rel-sampler.py /root/rel-argv.txt 0.02 > /dev/null 2>&1 < /dev/null & echo $! > /root/rel-sampler.pid'
done
foreign_snapshot > "$OUT/foreign-0.txt"
FOREIGN0=$(cat "$OUT/foreign-0.txt")
fact foreign planted file="$OUT/foreign-0.txt"
record "foreign objects planted (lab1 + lab2: SAs, SPs, tc)" "$(grep -c '| states|' <<< "$FOREIGN0" || true) SAs, $(grep -c '| policies|' <<< "$FOREIGN0" || true) SPs, $(grep -c '| tc ingress' <<< "$FOREIGN0" || true) tc filters (3 rules planted on each VM; u32 lists its hash table too), $(grep -c '| tc qdisc' <<< "$FOREIGN0" || true) ingress qdiscs (must be 2)"
# what was planted must read back whole, or the later snapshots would compare less than was planted
if ! { [ "$(grep -c '| tc qdisc' <<< "$FOREIGN0" || true)" = 2 ] && [ "$(grep -c '| states|' <<< "$FOREIGN0" || true)" = 6 ] \
	&& [ "$(grep -c '| policies|' <<< "$FOREIGN0" || true)" = 8 ] && [ "$(grep -c '| tc ingress' <<< "$FOREIGN0" || true)" -ge 6 ]; }; then
	bad "foreign objects planted read back (6 SAs, 8 SPs, >= 6 tc filters, 2 ingress qdiscs)" "see $OUT/foreign-0.txt"; exit 1
fi
record "argv samplers started on lab1 + lab2" "every 20 ms"

# ---------------------------------------------------------------------------------------------
# 1. keys: derive, check mode, render
t=$(now); r=$(pl derive playbooks/derive.yml) || { bad "derive.yml" "$r"; exit 1; }
record "derive.yml (key store)" "$r ($(elapsed "$t") s)"
mode=$(stat -c %a "$STORE"); dmode=$(stat -c %a "$(dirname "$STORE")")
record "key store file / directory mode" "$mode / $dmode"
collect_keys

# ---------------------------------------------------------------------------------------------
# 4. interruptions. interrupt NAME HOW DELAY 'TASK banner text' PLAYBOOK [ARGS]
INT_TRIED=0 INT_LEFT=0 AFTER_INT=""
descendants() { # PIDs below $1 (controller)
	local p kids
	kids=$(ps -o pid= --ppid "$1" 2> /dev/null || true)
	for p in $kids; do echo "$p"; descendants "$p"; done
}
# shellcheck disable=SC2016 # expanded on the VM
KILL_SSHD='s=$(cat /root/rel-sampler.pid 2>/dev/null)
for i in $(seq 200); do
  for p in $(pgrep -x python3); do
    [ "$p" = "$s" ] && continue
    q=$p
    while [ "$q" -gt 1 ]; do
      q=$(awk "{print \$4}" /proc/$q/stat 2>/dev/null) || break
      case "$(cat /proc/$q/comm 2>/dev/null)" in sshd*) kill -9 "$q" && echo "killed sshd session $q (module python3 $p)"; exit 0 ;; esac
    done
  done
  sleep 0.05
done; echo "no module process seen"'
# every python3 on a VM but the argv sampler is a module payload (the image runs no other Python).
# After an interruption a payload either finishes its work and exits, or finishes its work and
# then blocks writing its result into an SSH channel that nobody reads any more (seen: a SIGINT
# behind the multiplexed connection; the module releases the host lock before writing, see
# _lock.host_lock), or never got its code (blocked reading stdin). Wait until every payload is
# gone or has sat blocked on a pipe for 3 checks in a row, then kill those (what sshd does when
# the connection goes) so that later stages see only live module runs; print how many.
# shellcheck disable=SC2016 # expanded on the VM
WAIT_MODULES='s=$(cat /root/rel-sampler.pid 2>/dev/null); sleep 1; calm=0
for i in $(seq 600); do
  busy=0; stuck=""
  for p in $(pgrep -x python3); do
    [ "$p" = "$s" ] && continue
    case "$(cat /proc/$p/wchan 2>/dev/null)" in pipe_read|pipe_write) stuck="$stuck $p" ;; *) busy=1 ;; esac
  done
  if [ "$busy" = 0 ]; then calm=$((calm + 1)); else calm=0; fi
  if [ "$calm" -ge 3 ]; then
    n=0; for p in $stuck; do kill -9 "$p" 2>/dev/null && n=$((n + 1)); done
    echo "$n"; exit 0
  fi
  sleep 0.5
done; exit 1'
interrupt() {
	local name=$1 how=$2 delay=$3 when=$4 pb=$5; shift 5
	local log=$OUT/$name.log pid i hit=0 what="" rc=0
	INT_TRIED=$((INT_TRIED + 1))
	setsid ansible-playbook "${PB_INV[@]}" "$REPO_ROOT/$pb" "$@" > "$log" 2>&1 &
	pid=$!
	for ((i = 0; i < 12000; i++)); do
		if grep -qF "TASK [$when" "$log"; then hit=1; break; fi
		kill -0 "$pid" 2> /dev/null || break
		sleep 0.1
	done
	if [ "$hit" = 1 ]; then
		sleep "$delay"
		case $how in
			SIGKILL | SIGINT) kill -s "$how" -- "-$pid" 2> /dev/null && what="$how to the ansible-playbook process group" ;;
			ssh-client)
				for ((i = 0; i < 100; i++)); do
					local victims; victims=$(for p in $(descendants "$pid"); do [ "$(cat "/proc/$p/comm" 2> /dev/null)" = ssh ] && echo "$p"; done)
					# shellcheck disable=SC2086 # a list of PIDs
					if [ -n "$victims" ]; then kill -KILL $victims 2> /dev/null; what="SIGKILL to ssh client(s) $(xargs <<< "$victims")"; break; fi
					sleep 0.1
				done ;;
			sshd-*) what=$(on "${how#sshd-}" "$KILL_SSHD" || true); what="lab${how#sshd-}: $what" ;;
		esac
	fi
	for ((i = 0; i < 12000; i++)); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
	kill -KILL -- "-$pid" 2> /dev/null || true
	wait "$pid" || rc=$?
	# A module already running on a host when its controller died goes on and finishes its work
	# (its Python start alone takes seconds in TCG, so a fixed pause is not enough): wait until no
	# module process is left on either VM, so that "work left" below compares with what the host
	# really had before the re-run.
	local n k stuck=""
	for n in 1 2; do
		if k=$(on "$n" "$WAIT_MODULES"); then fact settle "$name" host="lab$n" ok=1; else
			fact settle "$name" host="lab$n" ok=0; record "interrupt $name" "lab$n: a module process still works 300 s after the kill"; continue; fi
		[ "${k:-0}" = 0 ] || stuck="$stuck, lab$n: $k payload(s) done but blocked on their result, killed"
	done
	AFTER_INT=$(host_idents 1; host_idents 2)
	fact interrupt "$name" how="$how" landed="$([ -n "$what" ] && echo 1 || echo 0)" rc="$rc"
	record "interrupt $name: $how $delay s after '$when'" "${what:-did not land (task not seen)}, playbook rc=$rc$stuck"
	[ -n "$what" ] && [ "$rc" != 0 ]
}
# after an interruption: re-run, then site.yml --check --diff, the owned set against the derivation,
# the foreign objects (test_interruptions_converge, test_owned_objects_as_derived, test_foreign_objects_intact)
reconverge() { # reconverge NAME PLAYBOOK [ARGS]
	local name=$1 pb=$2 r rc=0; shift 2
	r=$(vplay "$name-rerun" "$pb" --diff "$@") || rc=$?
	# the re-run must report changed>0 when it had work left (the owned SAs/SPs it found differ from
	# what it left); a module that was already running on the host may have finished its work after
	# the controller side was killed: then nothing was left and changed=0 is the right answer
	local left=0; [ "$AFTER_INT" = "$(host_idents 1; host_idents 2)" ] || { left=1; INT_LEFT=$((INT_LEFT + 1)); }
	fact rerun "$name" rc="$rc" changed="$(changed_of "$r")" left="$left" summary="$r"
	record "$name: re-run $pb -vvvv --diff (work left: $left)" "$r"
	# then site.yml in check mode (-vvvv --diff, also a key search input): nothing left to change
	rc=0; r=$(vplay "$name-idem" playbooks/site.yml --check --diff) || rc=$?
	fact idem "$name" rc="$rc" summary="$r"
	record "$name: site.yml --check --diff -vvvv after it (must be changed=0)" "$r"
	expect_check "$name"
	foreign_check "$name"
	collect_keys
}

need_converged() { # a stage that needs the converged pair (when an earlier stage was not run)
	local r
	[ "$(owned_sas 1)$(owned_sas 2)" != 00 ] && return 0
	local rc=0
	r=$(pl converge playbooks/site.yml) || rc=$?
	fact step "site.yml (converge for the next stage)" rc="$rc" summary="$r"
	record "site.yml (converge for the next stage)" "$r"
}

if stage conv-sigkill; then
	# a stray owned SA (reqid in our range, not derived) must go: the ipsec role converges with state overridden
	# shellcheck disable=SC2016 # expanded on the VM
	on 1 'ip xfrm state add src 192.168.100.1 dst 192.168.100.2 proto esp spi 0x51c0dead reqid 0x51c0fffe mode transport aead "rfc4106(gcm(aes))" 0x$(head -c 20 /dev/urandom | od -An -tx1 | tr -d " \n") 128'
	record "stray owned SA planted on lab1 (spi 0x51c0dead, reqid 0x51c0fffe)" "$(owned_sas 1) owned SAs on lab1"
	# converge, SIGKILL while the policies go in (SAs are there, policies not yet)
	interrupt converge-sigkill SIGKILL 0 "ipsec_offload.mlx5.ipsec : IPsec policies" playbooks/site.yml --diff -vvvv \
		|| record "converge-sigkill" "(the run ended before the kill landed)"
	reconverge converge-sigkill playbooks/site.yml
	on 1 'ip xfrm state list nokeys spi 0x51c0dead' > "$OUT/stray-after.txt"
	fact stray conv-sigkill file="$OUT/stray-after.txt"
fi

if stage conv-sshclient; then
	# converge interrupted by killing the controller's ssh client during the SA task
	interrupt converge-sshclient ssh-client 0 "ipsec_offload.mlx5.ipsec : IPsec states (SAs)" playbooks/site.yml --diff -vvvv \
		|| record "converge-sshclient" "(the run ended before the kill landed)"
	reconverge converge-sshclient playbooks/site.yml
fi

if stage tc; then
	# tc_flower_vlan overridden and deleted (no owned rule) next to the foreign tc rules
	for st in overridden deleted; do
		rc=0; ansible -i "$RUN/inventory.yml" lab -m ipsec_offload.mlx5.tc_flower_vlan -a "{\"config\": [], \"state\": \"$st\", \"devices\": [\"link0\"]}" > "$OUT/tc-$st.log" 2>&1 || rc=$?
		fact step "tc_flower_vlan state=$st" rc="$rc" log="$OUT/tc-$st.log"
		foreign_check "tc_flower_vlan-$st"
	done
fi

if stage rekey-sigint; then
	need_converged
	# rekey: SIGINT when phase 2 starts; the in-progress rotation in check mode; re-run continues it
	interrupt rekey-sigint SIGINT 0 "New outbound SAs (merged)" playbooks/rekey.yml --diff -vvvv || record "rekey-sigint" "(the run ended before the kill landed)"
	collect_keys
	rc=0; t=$(now); r=$(vplay rekey-check playbooks/rekey.yml --check --diff) || rc=$?
	fact step "rekey.yml --check --diff -vvvv (rotation in progress)" rc="$rc" summary="$r"
	record "rekey.yml --check --diff -vvvv (rotation in progress)" "$r ($(elapsed "$t") s)"
	reconverge rekey-sigint playbooks/rekey.yml
fi
if stage rekey-sshd; then
	need_converged
	# rekey: the VM's sshd session of lab2 killed while the old outbound SAs are deleted
	interrupt rekey-sshd sshd-2 0 "Old outbound SAs (deleted, identity only)" playbooks/rekey.yml -e '{"rekey_pairs": "all"}' --diff -vvvv \
		|| record "rekey-sshd" "(the run ended before the kill landed)"
	collect_keys
	reconverge rekey-sshd playbooks/rekey.yml
fi

# ---------------------------------------------------------------------------------------------
# 6. the lock: refusal while held, then concurrent runs
CONC_RUNS=0
holder=$(on 1 'setsid flock /run/ipsec_offload_mlx5.lock sleep 60 > /dev/null 2>&1 < /dev/null & echo $!')
host_idents 1 > "$OUT/lock-before.txt"
rc=0; ansible -i "$RUN/inventory.yml" lab1 -m ipsec_offload.mlx5.xfrm_offload_state \
	-a '{"config": [], "state": "deleted", "lock_timeout": 3}' > "$OUT/lock-held.log" 2>&1 || rc=$?
host_idents 1 > "$OUT/lock-after.txt"
CONC_RUNS=$((CONC_RUNS + 1))
fact lock held rc="$rc" holder="$holder" log="$OUT/lock-held.log" before="$OUT/lock-before.txt" after="$OUT/lock-after.txt"
record "module run against a held lock (lock_timeout 3)" "rc $rc (holder PID $holder)"
on 1 "pkill -P $holder; kill $holder" || true

rc=0; t=$(now); r=$(vplay teardown playbooks/teardown.yml --diff) || rc=$?
record "teardown.yml -vvvv --diff" "$r ($(elapsed "$t") s)"
fact step "teardown.yml -vvvv --diff" rc="$rc" summary="$r"
fact owned "after teardown.yml" left="$(($(owned_sas 1) + $(owned_sas 2) + $(owned_sps 1) + $(owned_sps 2)))"
foreign_check teardown

together() { # together NAME PB1 PB2 [delay]: both at once, timestamped logs; sets CONC_RUNS
	local name=$1 pb1=$2 pb2=$3 delay=${4:-0} p1 p2 rc1=0 rc2=0
	ANSIBLE_LOG_PATH=$OUT/$name-a.tlog ansible-playbook "${PB_INV[@]}" "$REPO_ROOT/$pb1" > "$OUT/$name-a.log" 2>&1 & p1=$!
	sleep "$delay"
	ANSIBLE_LOG_PATH=$OUT/$name-b.tlog ansible-playbook "${PB_INV[@]}" "$REPO_ROOT/$pb2" > "$OUT/$name-b.log" 2>&1 & p2=$!
	wait "$p1" || rc1=$?; wait "$p2" || rc2=$?
	CONC_RUNS=$((CONC_RUNS + 2))
	fact together "$name" rc1="$rc1" rc2="$rc2" log1="$OUT/$name-a.log" log2="$OUT/$name-b.log"
	record "$name: $(basename "$pb1") + $(basename "$pb2") at once" "rc $rc1/$rc2, $(sum_recap "$OUT/$name-a.log") / $(sum_recap "$OUT/$name-b.log")"
}
if stage conc-site-site; then
	t=$(now)
	together conc-site-site playbooks/site.yml playbooks/site.yml
	expect_check "two site.yml at once"
	record "two site.yml at once" "$(elapsed "$t") s"
fi
if stage conc-site-teardown; then
	need_converged  # teardown has work; site.yml starts 5 s later, while teardown removes
	t=$(now)
	for n in 1 2; do host_idents "$n"; done | awk '$1 == "sa" {print $4}' | sort -u > "$OUT/conc-spis-before.txt"
	together conc-site-teardown playbooks/site.yml playbooks/teardown.yml 5
	# which run touched each task last, per host (for the log)
	helper last "$OUT/conc-site-teardown-a.tlog=site" "$OUT/conc-site-teardown-b.tlog=teardown" > "$OUT/conc-last.txt"
	for n in 1 2; do host_idents "$n"; done | awk '$1 == "sa" {print $4}' | sort -u > "$OUT/conc-spis-after.txt"
	fact spis conc-site-teardown before="$OUT/conc-spis-before.txt" after="$OUT/conc-spis-after.txt"
	foreign_check "concurrent runs"
	# then one site.yml converges the pair (new SA instances where teardown retired the old ones)
	rc=0; r=$(pl conc-heal playbooks/site.yml) || rc=$?
	fact step "site.yml after site + teardown" rc="$rc" summary="$r"
	record "site.yml after site + teardown" "$r"
	expect_check "site + teardown, then site.yml"
	record "site.yml + teardown.yml at once" "$(elapsed "$t") s"
fi
collect_keys

# ---------------------------------------------------------------------------------------------
# 1. the key search
SAMPLES=0
for n in 1 2; do
	# shellcheck disable=SC2016 # expanded on the VM
	on "$n" 'p=$(cat /root/rel-sampler.pid); kill -TERM "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.1; done'
	on "$n" 'cat /root/rel-argv.txt' > "$OUT/argv-lab$n.txt"
	s=$(head -n 1 "$OUT/argv-lab$n.txt")
	record "lab$n argv sampler" "${s#\#}"
	SAMPLES=$((SAMPLES + $(awk 'NR == 1 {print $2}' "$OUT/argv-lab$n.txt")))
done
NKEYS=$(wc -l < "$KEYS")
# on the VMs: every file under /root /tmp /var/tmp /run /var/log /etc, patterns on stdin (never in argv)
VMHITS=0
for n in 1 2; do
	h=$(python3 -c 'import base64, sys
for k in open(sys.argv[1]).read().split():
    b = bytes.fromhex(k)
    print(k); print(k[:-8]); print(k.upper()); print(k[:-8].upper())
    print(base64.b64encode(b).decode().rstrip("=")[:-1]); print(base64.b64encode(b[:-4]).decode().rstrip("=")[:-1])' "$KEYS" \
		| ssh -F "$RUN/ssh_config" "lab$n" 'grep -rlaF -f - /root /tmp /var/tmp /run /var/log /etc 2>/dev/null | grep -v "^/run/netns" || true')
	printf '%s' "$h" > "$OUT/vm-key-hits-lab$n.txt"
	fact vmhits "lab$n" file="$OUT/vm-key-hits-lab$n.txt"
	c=$(grep -c . <<< "$h" || true)
	record "lab$n files holding a key (/root /tmp /var/tmp /run /var/log /etc)" "$c${h:+: $(xargs <<< "$h")}"
	VMHITS=$((VMHITS + c))
done
# positive control: the search finds every key in the key store and in the kernel dump
helper scan "$KEYS" "$STORE" > "$OUT/key-scan-control.txt" || true
ctl=$(head -n 1 "$OUT/key-scan-control.txt")
record "positive control: search of the key store (holds keys by design)" "$ctl"
scan=$(helper scan "$KEYS" "$OUT"/*.log "$OUT"/results "$OUT"/render-* "$OUT"/argv-lab1.txt "$OUT"/argv-lab2.txt)
printf '%s\n' "$scan" > "$OUT/key-scan.txt"
record "key search: logs, results (tree), rendered files, argv samples" "$(head -n 1 <<< "$scan")"
OCC=$(head -n 1 <<< "$scan" | awk '{print $NF}')
OCC=$((OCC + VMHITS))
NLOGS=$(find "$OUT" -maxdepth 1 -name '*.log' | wc -l)
NRES=$(find "$OUT/results" -type f 2> /dev/null | wc -l)

for n in 1 2; do on "$n" "N=$n; $UNPLANT" > /dev/null 2>&1 || true; done

# ---------------------------------------------------------------------------------------------
# the checks: pytest on the evidence above (tests/lab/test_reliability.py)
t=$(now)
if REL_OUT=$OUT REL_STORE=$STORE REL_KEYS=$KEYS REL_STAGES_RUN="$STAGES_RUN" \
	REL_XFRM_TEXT="$REPO_ROOT/plugins/module_utils/_xfrm_text.py" python3 -m pytest -q -p no:cacheprovider -rA --assert=plain \
	"$REPO_ROOT/tests/lab/test_reliability.py" > "$OUT/checks.txt" 2>&1; then
	CHECKS="$(tail -n 1 "$OUT/checks.txt" | tr -d '=' | xargs)"
	record "checks: tests/lab/test_reliability.py" "$CHECKS ($(elapsed "$t") s)"
else
	CHECKS="$(tail -n 1 "$OUT/checks.txt" | tr -d '=' | xargs)"
	grep -E '^(FAILED|ERROR) ' "$OUT/checks.txt" | cut -c1-300 | while read -r line; do record "  $line" ""; done
	bad "checks: tests/lab/test_reliability.py" "$CHECKS (see $OUT/checks.txt)"
fi
# the checks' own output holds no key either
occ=$(helper scan "$KEYS" "$OUT/checks.txt" | head -n 1 | awk '{print $NF}')
[ "$occ" = 0 ] || bad "key search: the checks' output" "$occ occurrences in $OUT/checks.txt"

# ---------------------------------------------------------------------------------------------
# figures
FOREIGN_N=$(wc -l <<< "$FOREIGN0")
TOTAL=$(elapsed "$T0")
HOSTINFO="$(uname -sr), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); VMs: $(on 1 'uname -r; ip -V' | xargs)"
FIG=$(cat <<EOF
| figure | value |
|---|---|
| 1. key occurrences found (hex, hex without salt, base64 of both; $NKEYS keys) | $OCC |
| 1. argv samples taken on the managed hosts (every 20 ms, both VMs) | $SAMPLES |
| 1. places searched: playbook logs / module results (tree) / VM files | $NLOGS / $NRES / 2 hosts |
| 1. key store mode | $mode (dir $dmode) |
| 4. interruptions tried (of them with work left for the re-run: $INT_LEFT) | $INT_TRIED |
| 5. foreign objects (one line each: SAs, SPs, tc filter lines, qdiscs; both VMs) / snapshots compared | $FOREIGN_N / $FOREIGN_CHECKS |
| 6. concurrent runs (+ held-lock refusal) | $CONC_RUNS |
| the checks of these figures (tests/lab/test_reliability.py, pytest) | $CHECKS |
EOF
)
record "figures" ""
while read -r line; do record "  $line" ""; done <<< "$FIG"
record "total" "$TOTAL s"
[ "$FAILED" = 0 ] && RESULT=PASS || RESULT=FAIL
if [ "${REL_WRITE_DOC:-1}" = 1 ]; then
	SECTION=$(cat <<EOF
<!-- lab-reliability:begin (written by lab/reliability.sh; figures.py keeps this block) -->
## Lab figures (real kernel, lab/reliability.sh)

Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $TOTAL s (incl. boot), result $RESULT.
Machine: $HOSTINFO.
Reproduce: \`$([ "$REL_STAGES" = "$STAGES_ALL" ] || echo "REL_STAGES=\"$REL_STAGES\" ")bash lab/reliability.sh\` (own VM pair, SSH 2281/2282; LAB_KEEP=1
keeps it; without REL_STAGES every stage runs; .ci/run runs the three of REL_STAGES_CI there).
Stages run:${STAGES_RUN:- none} (all: $STAGES_ALL); always: foreign state, held-lock refusal,
teardown.yml, key search.

$FIG

How: the keys are read from both kernels (\`ip xfrm state\`, owned SAs) after every step and from the
key store; searched as hex of key||salt (any case), hex of the key without the 4-byte salt, and
base64 of both (the 4-byte salt alone is 8 hex digits, like every SPI and reqid: not searched alone,
it is covered by the key||salt form). Searched: every playbook log of the suite (site/rekey/teardown
with -vvvv, --check --diff and --diff, interrupted runs), every module result (ansible.builtin.tree),
the files render.yml wrote (masked), the distinct argv of all processes sampled on both VMs, and
every file under /root /tmp /var/tmp /run /var/log /etc on both VMs. The key store itself is the
positive control (the search finds the keys there). Interruptions: SIGKILL/SIGINT of the playbook's
process group and SIGKILL of the ssh client (controller) / of the sshd session (VM) at a task banner
of converge and rekey; converged = the re-run succeeded and reported changed>0 when it had work left
(the owned SAs/SPs differed from what the interrupted run left; a module already running on the host
can finish after its controller is killed), site.yml --check --diff then changed=0, and the owned SAs/SPs equal the
derivation (render.yml): no duplicate, no orphan. Foreign: SAs (reqid 7 and 2), SPs (reqid 7, IKE bypass),
tc flower/u32 rules without our cookie, compared object by object (\`ip xfrm\`/\`tc\` without -s) after
converge, overridden (a stray owned SA removed), tc_flower_vlan overridden/deleted, rekey, teardown and
the concurrent runs. Concurrency: two site.yml at once, then site.yml + teardown.yml at once (the
result must be what the last module run per host implies, from the timestamped logs), and a module
run against a held lock must fail naming the holder's PID with the host unchanged. Each of these is
a pytest check (tests/lab/test_reliability.py) run at the end on the evidence the script leaves
(facts.jsonl and the files it names); a check for a stage that did not run is skipped, saying so.
<!-- lab-reliability:end -->
EOF
)
	printf '%s\n' "$SECTION" > "$OUT/section.md"
	python3 - "$DOC" "$OUT/section.md" <<'PYDOC' || flag "write $DOC" "failed"
import re, sys
doc = sys.argv[1]
section = open(sys.argv[2], encoding="utf-8").read().strip() + "\n"
text = open(doc, encoding="utf-8").read() if __import__("os").path.exists(doc) else ""
pat = re.compile(r"<!-- lab-reliability:begin.*?<!-- lab-reliability:end -->\n?", re.S)
text = pat.sub(lambda m: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
open(doc, "w", encoding="utf-8").write(text)
PYDOC
	record "figures written to" "docs/reliability.md (lab section)"
fi
