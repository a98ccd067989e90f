#!/usr/bin/env bash
# The scale benchmark (issue 5), one command, on its own lab pair (lab/lab.sh via lab/lib.sh):
#
#   bash bench/run.sh                 # N = 100, 1000, 10000 SA pairs; + site.yml vs the vendor script
#   BENCH_QUICK=1 bash bench/run.sh   # N = 100, 1000 (the CI variant)
#
# For each N (pairs; 2N SAs + 2N policies, bench/gen.py), on lab1, each method in its own network
# namespace (created and removed here, so nothing else on the VM is touched):
#   floor      one raw `ip -batch -` with all objects (apply), `ip xfrm state` + `ip xfrm policy`
#              dumps (the no-op floor), one raw `ip -batch -` of the deletes (deleted)
#   per-object one `ip -batch -` process per object, key on stdin (the vendor-script way)
#   module     xfrm_offload_state + xfrm_offload_policy run on the VM itself (the AnsiballZ payload
#              Ansible ships, `execute`d with python3: module work without SSH and controller);
#              apply (merged), no-op re-run, deleted; peak RSS of the module process (os.wait4)
#   ansible    the same three steps as ansible-playbook runs of bench/play.yml (one task each);
#              for the no-op also the same lists to bench/library/bench_stub.py, a module that does
#              nothing (ansible_stub: what Ansible itself spends to hand the list to any module)
#   loop       an Ansible loop, one module run per object (bench/loop.yml), for BENCH_LOOP_PAIRS
#              pairs only (default 10), extrapolated per object to every N
# Then for each lab topology (vxlan, roce): playbooks/site.yml converge on the reset pair against
# the vendor's command sequence (bench/vendor.sh, lab devices, offload none) run as one script
# over SSH on each host.  Results: bench/results/ (bench.csv, bench.md, bench.png, raw.jsonl)
# and the tables in docs/benchmark.md are regenerated from them (bench/report.py).
#
# Knobs: BENCH_SIZES ("100 1000 10000"), BENCH_QUICK=1, BENCH_LOOP_PAIRS (5), BENCH_PEROBJ_MAX
# (100: per-object runs for N up to this, extrapolated per object above), BENCH_ANSIBLE_MAX (10000:
# ansible-playbook runs for N up to this), BENCH_TOPOLOGIES ("vxlan roce"; "" skips),
# BENCH_PROFILE_N (0 = off; N: cProfile the state module at this N - known to record only the
# AnsiballZ wrapper so far, see docs/benchmark.md),
# BENCH_RESULTS (bench/results), LAB_KEEP=1. Own pair: LAB_RUN=lab/run/bench, SSH 2291/2292, link 4471.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_DIR=$(cd "$BENCH_DIR/../lab" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lab/lib.sh
source "$LAB_DIR/lib.sh"
lab_pair bench 2291 2292 4471
export LAB_MEM=${LAB_MEM:-2048} LAB_SSH_TIMEOUT=${LAB_SSH_TIMEOUT:-600}

SIZES=${BENCH_SIZES:-100 1000 10000}
[ "${BENCH_QUICK:-0}" = 1 ] && SIZES=${BENCH_SIZES:-100 1000}
LOOP_PAIRS=${BENCH_LOOP_PAIRS:-5}
PEROBJ_MAX=${BENCH_PEROBJ_MAX:-100}
ANSIBLE_MAX=${BENCH_ANSIBLE_MAX:-10000}
TOPOS=${BENCH_TOPOLOGIES-vxlan roce}
PROFILE_N=${BENCH_PROFILE_N:-0} # off: in the 2026-11-24 run it recorded only the AnsiballZ wrapper
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results}
for n in $SIZES $LOOP_PAIRS; do
	if ! [[ $n =~ ^[1-9][0-9]*$ ]] || [ "$n" -gt 28000 ]; then die "bad size '$n' (1..28000 pairs: the owned reqid range)"; fi
done
for t in $TOPOS; do case $t in vxlan | roce) ;; *) die "BENCH_TOPOLOGIES: unknown topology '$t'" ;; esac; done

report_init "benchmark report"
T0=$(now)
lab_start
RAW=$OUT/raw.jsonl
: > "$RAW"
VM=/root/bench

put() { ssh -F "$RUN/ssh_config" "lab$1" "cat > $3" < "$2"; } # put N LOCAL REMOTE (stdin: no argv)
vm() { on 1 "python3 $VM/vm_bench.py $*"; }
# emit N PHASE METHOD JSON [extra json fields]: one result line
emit() { printf '{"n": %s, "phase": "%s", "method": "%s", "r": %s%s}\n' "$1" "$2" "$3" "$4" "${5:+, $5}" >> "$RAW"; }
counts() { vm count "$1" | tr -d '\n'; }

# ---- VM side: probes and the modules' AnsiballZ payloads ------------------------------------
on 1 "rm -rf $VM ~/.ansible/tmp; mkdir -p $VM"
put 1 "$BENCH_DIR/vm_bench.py" "$VM/vm_bench.py"
# Our namespaces only (bench_*), left over from an interrupted run.
# shellcheck disable=SC2016 # expanded on the VM
on 1 'for n in $(ip netns list | awk "/^bench_/{print \$1}"); do ip netns del $n; done'
t=$(now)
for m in state policy; do
	ANSIBLE_KEEP_REMOTE_FILES=1 ansible -i "$RUN/inventory.yml" lab1 -e ansible_ssh_pipelining=false \
		-e ansible_pipelining=false -m "ipsec_offload.mlx5.xfrm_offload_$m" -a state=gathered > "$OUT/capture-$m.log" 2>&1 \
		|| { bad "capture the $m module payload" "see $OUT/capture-$m.log"; exit 1; }
	# shellcheck disable=SC2016 # expanded on the VM
	on 1 "mkdir -p $VM/$m && mv ~/.ansible/tmp/ansible-tmp-*/AnsiballZ_xfrm_offload_$m.py $VM/$m/ && rm -rf ~/.ansible/tmp \
		&& python3 $VM/$m/AnsiballZ_xfrm_offload_$m.py explode > /dev/null"
done
record "module payloads captured (AnsiballZ, exploded on lab1)" "$(elapsed "$t") s"

ansible_task() { # ansible_task N PHASE MODULE STATE NS: one ansible-playbook run of play.yml, timed
	local n=$1 phase=$2 mod=$3 st=$4 ns=$5 t rc=0 secs ch
	t=$(now)
	ANSIBLE_LIBRARY=$BENCH_DIR/library ansible-playbook -i "$RUN/inventory.yml" "$BENCH_DIR/play.yml" -e "@$GEN/vars.json" \
		-e "bench_module=$mod bench_state=$st bench_ns=$ns" > "$OUT/ansible-$n-$phase-$mod.log" 2>&1 || rc=$?
	secs=$(elapsed "$t")
	ch=$(awk '/^lab1 /{for(i=1;i<=NF;i++){split($i,a,"="); if(a[1]=="changed")print a[2]}}' "$OUT/ansible-$n-$phase-$mod.log")
	emit "$n" "$phase" "$(case $mod in stub_*) echo ansible_stub ;; *) echo ansible ;; esac)" \
		"{\"seconds\": $secs, \"rc\": $rc, \"changed\": ${ch:-null}}" "\"module\": \"$mod\""
	[ "$rc" = 0 ] || { bad "N=$n ansible $phase $mod" "rc=$rc (log $OUT/ansible-$n-$phase-$mod.log)"; return 1; }
}

module_run() { # module_run N PHASE MODULE STATE NS
	local r
	r=$(vm module "$VM/$3" "$VM/vars.json" "bench_$([ "$3" = state ] && echo sas || echo sps)" "$4" "$5")
	emit "$1" "$2" module "$r" "\"module\": \"$3\""
	case $r in *'"failed": false'*) ;; *) bad "N=$1 module $2 $3" "$(cut -c1-300 <<< "$r")"; return 1 ;; esac
}

expect_counts() { # expect_counts NS SAS SPS LABEL
	local c
	c=$(counts "$1")
	[ "$c" = "{\"state\": $2, \"policy\": $3}" ] || { bad "$4" "expected $2 SAs / $3 SPs in $1, found $c"; return 1; }
}

one_size() {
	local n=$1 objs=$(($1 * 4)) r ns t
	GEN=$RUN/gen-$n
	t=$(now)
	python3 "$BENCH_DIR/gen.py" "$n" "$GEN"
	on 1 "mkdir -p $VM/n$n"
	put 1 "$GEN/vars.json" "$VM/vars.json"
	put 1 "$GEN/add.batch" "$VM/add.batch"
	put 1 "$GEN/del.batch" "$VM/del.batch"
	record "N=$n: generate + copy $objs objects" "$(elapsed "$t") s"

	# floor
	ns=bench_floor; on 1 "ip netns add $ns"
	r=$(vm raw $ns "$VM/add.batch"); emit "$n" apply floor "$r"
	expect_counts $ns $((2 * n)) $((2 * n)) "N=$n floor apply" || return 1
	r=$(vm dump $ns); emit "$n" noop floor "$r"
	r=$(vm raw $ns "$VM/del.batch"); emit "$n" deleted floor "$r"
	expect_counts $ns 0 0 "N=$n floor deleted" || return 1
	on 1 "ip netns del $ns"

	# one ip per object
	if [ "$n" -le "$PEROBJ_MAX" ]; then
		ns=bench_perobj; on 1 "ip netns add $ns"
		r=$(vm perobj $ns "$VM/add.batch"); emit "$n" apply perobj "$r"
		expect_counts $ns $((2 * n)) $((2 * n)) "N=$n per-object apply" || return 1
		r=$(vm perobj $ns "$VM/del.batch"); emit "$n" deleted perobj "$r"
		on 1 "ip netns del $ns"
	fi

	# the modules on the VM (no SSH, no controller)
	ns=bench_module; on 1 "ip netns add $ns"
	module_run "$n" apply state merged $ns && module_run "$n" apply policy merged $ns || return 1
	expect_counts $ns $((2 * n)) $((2 * n)) "N=$n module apply" || return 1
	module_run "$n" noop state merged $ns && module_run "$n" noop policy merged $ns || return 1
	if [ "$n" = "$PROFILE_N" ]; then # where the time goes: cProfile of a second no-op run and of the apply
		on 1 "python3 $VM/vm_bench.py profile $VM/state $VM/vars.json bench_sas merged $ns $VM/profile-noop-state.txt" > /dev/null
		on 1 "cat $VM/profile-noop-state.txt" > "$OUT/profile-$n-noop-state.txt"
	fi
	module_run "$n" deleted policy deleted $ns && module_run "$n" deleted state deleted $ns || return 1
	expect_counts $ns 0 0 "N=$n module deleted" || return 1
	if [ "$n" = "$PROFILE_N" ]; then
		on 1 "python3 $VM/vm_bench.py profile $VM/state $VM/vars.json bench_sas merged $ns $VM/profile-apply-state.txt" > /dev/null
		on 1 "cat $VM/profile-apply-state.txt" > "$OUT/profile-$n-apply-state.txt"
	fi
	on 1 "ip netns del $ns"

	results || return 1
	# ansible-playbook, one task per module
	if [ "$n" -gt "$ANSIBLE_MAX" ]; then record "N=$n: all methods (no ansible-playbook: BENCH_ANSIBLE_MAX)" "$(elapsed "$t") s"; return 0; fi
	ns=bench_ansible; on 1 "ip netns add $ns"
	ansible_task "$n" apply state merged $ns && ansible_task "$n" apply policy merged $ns || return 1
	expect_counts $ns $((2 * n)) $((2 * n)) "N=$n ansible apply" || return 1
	ansible_task "$n" noop state merged $ns && ansible_task "$n" noop policy merged $ns || return 1
	ansible_task "$n" noop stub_state merged $ns && ansible_task "$n" noop stub_policy merged $ns || return 1
	ansible_task "$n" deleted policy deleted $ns && ansible_task "$n" deleted state deleted $ns || return 1
	expect_counts $ns 0 0 "N=$n ansible deleted" || return 1
	on 1 "ip netns del $ns"
	record "N=$n: all methods" "$(elapsed "$t") s"
}

loop_run() {
	local n=$LOOP_PAIRS t rc=0 secs ns=bench_loop
	GEN=$RUN/gen-loop
	python3 "$BENCH_DIR/gen.py" "$n" "$GEN"
	on 1 "ip netns add $ns"
	t=$(now)
	ansible-playbook -i "$RUN/inventory.yml" "$BENCH_DIR/loop.yml" -e "@$GEN/vars.json" -e "bench_ns=$ns" \
		> "$OUT/loop-$n.log" 2>&1 || rc=$?
	secs=$(elapsed "$t")
	emit "$n" apply loop "{\"seconds\": $secs, \"rc\": $rc, \"objects\": $((4 * n))}"
	[ "$rc" = 0 ] || { bad "ansible loop ($n pairs)" "rc=$rc (log $OUT/loop-$n.log)"; return 1; }
	expect_counts $ns $((2 * n)) $((2 * n)) "ansible loop apply" || return 1
	on 1 "ip netns del $ns"
	record "Ansible loop, $n pairs ($((4 * n)) module runs)" "$secs s"
}

# ---- results (written after every step, so an interrupted run leaves what it measured) ----
BVENV=$LAB_DIR/run/venv-bench # matplotlib, apart from the project venv
# shellcheck disable=SC2034 # VENV is read by venv_need
( VENV=$BVENV; venv_need "$BENCH_DIR/requirements.txt" > /dev/null )
MACHINE="$(nproc) cores $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) (load at start $(cut -d' ' -f1-3 /proc/loadavg)); lab VM: QEMU TCG 1 vCPU ${LAB_MEM} MiB, $(on 1 'uname -r; ip -V' | xargs)"
results() {
	mkdir -p "$RESULTS"
	cp "$RAW" "$RESULTS/raw.jsonl"
	local f
	for f in "$OUT"/profile-*.txt; do [ -f "$f" ] && cp "$f" "$RESULTS/"; done
	"$BVENV/bin/python" "$BENCH_DIR/report.py" "$RESULTS" --machine "$MACHINE" \
		--loop-pairs "$LOOP_PAIRS" --docs "$REPO_ROOT/docs/benchmark.md" > "$OUT/report.txt" \
		|| { bad "report" "see $OUT/report.txt"; return 1; }
}

loop_run || exit 1

# ---- site.yml per topology against the vendor's sequence -----------------------------------
if [ -n "$TOPOS" ]; then
	t=$(now)
	r=$(play prepare "" lab/prepare.yml) || { bad "lab/prepare.yml" "$r"; exit 1; }
	record "lab/prepare.yml (modules, OVS, link0 promisc)" "$r ($(elapsed "$t") s)"
	for topo in $TOPOS; do
		inv=lab-$topo
		lab_reset || exit 1
		r=$(play "$topo-derive" "$inv" playbooks/derive.yml) || { bad "$topo: derive.yml" "$r"; exit 1; }
		t=$(now)
		r=$(play "$topo-site" "$inv" playbooks/site.yml) || { bad "$topo: site.yml" "$r"; exit 1; }
		secs=$(elapsed "$t")
		emit 0 "$topo" site "{\"seconds\": $secs}"
		record "$topo: site.yml converge (both hosts)" "$r ($secs s)"
		r=$(play "$topo-teardown" "$inv" playbooks/teardown.yml) || { bad "$topo: teardown.yml" "$r"; exit 1; }
		lab_reset || exit 1
		# the vendor sequence: one script per host over SSH, both hosts in parallel (as Ansible does)
		t=$(now)
		bash "$BENCH_DIR/vendor.sh" "$topo" "$RUN/ssh_config" > "$OUT/$topo-vendor.log" 2>&1 \
			|| { bad "$topo: vendor script" "see $OUT/$topo-vendor.log"; exit 1; }
		secs=$(elapsed "$t")
		emit 0 "$topo" vendor "{\"seconds\": $secs}"
		record "$topo: vendor command sequence (one script per host)" "$secs s"
		bash "$BENCH_DIR/vendor.sh" "$topo-undo" "$RUN/ssh_config" >> "$OUT/$topo-vendor.log" 2>&1 \
			|| { bad "$topo: undo the vendor script" "see $OUT/$topo-vendor.log"; exit 1; }
		lab_reset || exit 1
	done
	results || exit 1
fi

# largest last: an interrupted run keeps everything before it
for n in $SIZES; do one_size "$n" || exit 1; results || exit 1; done
record "results" "$RESULTS (bench.csv, bench.md, bench.png), docs/benchmark.md"
record "targets" "$(tail -n 1 "$OUT/report.txt")"
cat "$OUT/report.txt" >&2
record "total" "$(elapsed "$T0") s"
