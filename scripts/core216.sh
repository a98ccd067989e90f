#!/usr/bin/env bash
# The collection on ansible-core 2.16, the minimum meta/runtime.yml declares (the project venv has 2.19):
#   1. its own venv (${CORE216_VENV:-.cache/core216-venv}) with ansible-core 2.16.x, pytest, hypothesis
#   2. the unit tests with it (tests/unit: modules, filters, the playbook tests that run
#      ansible-playbook 2.16 against the simulated kernel, the -vvvv key searches)
#   3. playbooks/render.yml on inventories/examples/mesh3 (no host contacted): one script per host,
#      keys masked, no key of the key store in the output
#   4. a check-mode play: playbooks/site.yml --check --diff on two local hosts, each in a scratch
#      network namespace of this machine (inventory written here; offload none, the host kernel
#      needs no ESP for check mode): SAs and policies reported as to be added, with their diff,
#      nothing added in the namespaces, no key in the output
# Any failure stops it with a message and exit status 1 ("FAIL core216: ..."); the last line is
# "PASS core216: ..." with the versions and the wall time. Needs root (network namespaces).
#
#   bash scripts/core216.sh            # CORE216_PYTEST_ARGS="-x" e.g. to stop at the first failure;
#                                      # CORE216_UNIT=0 runs the plays only (the PASS line then says so)
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" # REPO_ROOT, log, die, apt_need, venv_need
set -euo pipefail
start=$SECONDS
fail() { printf 'FAIL core216: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (scratch network namespaces for the check-mode play)"
apt_need iproute2 ethtool python3-venv
VENV=${CORE216_VENV:-$REPO_ROOT/.cache/core216-venv}
req=$(mktemp); work=$(mktemp -d)
ns1="core216a-$$" ns2="core216b-$$"
cleanup() { ip netns del "$ns1" 2>/dev/null || true; ip netns del "$ns2" 2>/dev/null || true; rm -rf "$req" "$work"; }
trap cleanup EXIT
printf '%s\n' 'ansible-core>=2.16,<2.17' 'pytest>=8' 'hypothesis>=6.100' > "$req"
venv_need "$req"
ver=$("$VENV/bin/ansible" --version | sed -n 1p)   # sed reads it all: head would break the pipe
[[ $ver == *"core 2.16."* ]] || fail "the venv $VENV has '$ver', not ansible-core 2.16"
log "$ver ($VENV)"
cd "$REPO_ROOT"

# 2. unit tests (CORE216_UNIT=0 skips them: the plays only, as .ci/run does for time; the PASS line says so)
if [ "${CORE216_UNIT:-1}" = 0 ]; then
	log "unit tests SKIPPED (CORE216_UNIT=0)"
else
	log "unit tests with ansible-core 2.16"
	# shellcheck disable=SC2086 # CORE216_PYTEST_ARGS: words on purpose
	"$VENV/bin/python" -m pytest -q -p no:cacheprovider ${CORE216_PYTEST_ARGS:-} tests/unit \
		|| fail "unit tests failed on $ver"
fi
units=$SECONDS

# the collection as an installed one, for ansible-playbook
coll="$work/collections"
mkdir -p "$coll/ansible_collections/ipsec_offload"
ln -s "$REPO_ROOT" "$coll/ansible_collections/ipsec_offload/mlx5"
export ANSIBLE_COLLECTIONS_PATH=$coll ANSIBLE_HOME=$work/ansible-home ANSIBLE_LOCAL_TEMP=$work/tmp \
	ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_STDOUT_CALLBACK=default \
	ANSIBLE_PYTHON_INTERPRETER=$VENV/bin/python
pb() { "$VENV/bin/ansible-playbook" "$@"; }
# every key of a key store, lower case without 0x (the search of the output)
store_keys() {
	"$VENV/bin/python" - "$1" << 'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for dsts in doc["pairs"].values():
    for e in dsts.values():
        if e.get("key"):
            print(str(e["key"]).lower().removeprefix("0x"))
EOF
}
no_keys() { # no_keys STORE LOG WHAT
	local k n=0
	while read -r k; do
		[ -n "$k" ] || continue
		n=$((n + 1))
		! grep -qiF "$k" "$2" || fail "$3: a key of $1 is in the output ($2)"
	done < <(store_keys "$1")
	[ "$n" -gt 0 ] || fail "$3: no key in $1 to search for"
}

# 3. render.yml
log "render.yml (inventories/examples/mesh3)"
out="$work/render"
pb -i inventories/examples/mesh3 playbooks/render.yml -e "ipsec_render_dir=$out" \
	-e "ipsec_keystore_path=$work/ks/render.yml" > "$work/render.log" 2>&1 \
	|| { tail -n 30 "$work/render.log" >&2; fail "render.yml failed on $ver (log above)"; }
n=$(find "$out" -name '*.xfrm.sh' | wc -l)
[ "$n" = 3 ] || fail "render.yml wrote $n scripts, not one per mesh3 host (3)"
grep -q 'xfrm state add' "$out"/node1.xfrm.sh || fail "render.yml: node1's script has no 'xfrm state add'"
no_keys "$work/ks/render.yml" "$work/render.log" "render.yml"
no_keys "$work/ks/render.yml" <(cat "$out"/*.xfrm.sh) "render.yml scripts (keys masked)"

# 4. site.yml --check --diff on two local hosts in scratch namespaces
log "site.yml --check --diff (two local hosts in network namespaces $ns1, $ns2)"
if ! ip netns add "$ns1" || ! ip netns add "$ns2"; then fail "cannot create network namespaces"; fi
cat > "$work/inventory.yml" << EOF
all:
  children:
    ipsec_core216:
      hosts:
        h1: {ipsec_local_ip: 192.0.2.1, ipsec_namespace: $ns1}
        h2: {ipsec_local_ip: 192.0.2.2, ipsec_namespace: $ns2}
      vars:
        ipsec_meshes: [ipsec_core216]
        ipsec_dev: lo
        ipsec_offload: none
        ipsec_mode: transport
        ipsec_guards_root: $work/root   # the guards' boot files (check mode writes none anyway)
        ansible_connection: local
        ansible_python_interpreter: $VENV/bin/python
  vars:
    ipsec_keystore_path: $work/ks/site.yml
EOF
# keys first (check mode never writes the key store): the derivation alone
pb -i "$work/inventory.yml" playbooks/derive.yml > "$work/derive.log" 2>&1 \
	|| { tail -n 30 "$work/derive.log" >&2; fail "derive.yml failed on $ver (log above)"; }
pb -i "$work/inventory.yml" playbooks/site.yml --check --diff > "$work/check.log" 2>&1 \
	|| { tail -n 40 "$work/check.log" >&2; fail "site.yml --check --diff failed on $ver (log above)"; }
for h in h1 h2; do
	grep -qE "^changed: \[$h\]" "$work/check.log" || fail "site.yml --check: $h reports no change"
done
# the SA task's diff: the added SAs with their SPIs, never 'censored'
diffs=$(awk '/^TASK \[ipsec_offload.mlx5.ipsec : IPsec states \(SAs\)\]/ {r = 1; next} /^TASK / {r = 0} r' "$work/check.log")
[ "$(grep -c '^+- src: 192.0.2.' <<< "$diffs")" -ge 4 ] || fail "site.yml --check --diff: no SA diff (2 SAs per host) in the SA task ($work/check.log)"
! grep -q censored <<< "$diffs" || fail "site.yml --check --diff: the SA task's result is censored"
[ -z "$(ip -n "$ns1" xfrm state; ip -n "$ns2" xfrm state; ip -n "$ns1" xfrm policy; ip -n "$ns2" xfrm policy)" ] \
	|| fail "check mode added SAs or policies in the namespaces"
no_keys "$work/ks/site.yml" "$work/check.log" "site.yml --check --diff"
[ "${CORE216_UNIT:-1}" != 0 ] || ver="$ver (unit tests SKIPPED)"
printf 'PASS core216: %s; unit tests (%ss), render.yml (3 scripts, keys masked), site.yml --check --diff (SA diff, nothing added, no key); %s s in all\n' \
	"$ver" "$((units - start))" "$((SECONDS - start))"
awk '/^PLAY RECAP/ {r = 1; next} r && NF {$1 = $1; print "  site.yml --check: " $0}' "$work/check.log"
