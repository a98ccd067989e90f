#!/usr/bin/env bash
# Run the molecule scenarios of the collection (extensions/molecule/<scenario>, where molecule looks for
# them in a collection; run from the collection root).
#
#   scripts/molecule.sh                 # molecule test -s default: the QEMU lab pair, end to end,
#                                       # once per topology: lab-vxlan, then lab-roce
#   scripts/molecule.sh converge        # any molecule subcommand, scenario default
#   scripts/molecule.sh setup           # only install molecule's venv (and the lab's host tools)
#   MOLECULE_LAB_INVENTORIES="lab" scripts/molecule.sh   # the plain pair only (inventories/examples/lab)
#   MOLECULE_SCENARIO=lab_dpu scripts/molecule.sh test   # real DPU hosts: see extensions/molecule/lab_dpu/README.md
#
# Installs molecule + pytest-testinfra (tests/requirements-molecule.txt) into their own venv
# (.cache/molecule-venv; MOLECULE_VENV overrides) - not the project venv: molecule brings many
# packages the unit tests do not need. The default scenario's lab pair uses its own run directory
# and ports (lab/run/molecule, 2241/2242/4421), so it can run beside the default lab pair; the
# image cache lab/cache is shared (lab.sh build is cached by its inputs).
# Prints the wall time of each molecule action and in total; exit status is molecule's.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" # REPO_ROOT, log, die, apt_need, venv_need

SCENARIO=${MOLECULE_SCENARIO:-default}
ACTION=${1:-test}
shift || true
VENV=${MOLECULE_VENV:-$REPO_ROOT/.cache/molecule-venv}

if [ "$SCENARIO" = default ]; then
	bash "$REPO_ROOT/lab/lab.sh" setup # host tools of the lab (apt, only what is missing)
	export LAB_RUN=${LAB_RUN:-$REPO_ROOT/lab/run/molecule}
	export LAB_SSH_PORT1=${LAB_SSH_PORT1:-2241} LAB_SSH_PORT2=${LAB_SSH_PORT2:-2242} LAB_LINK_PORT=${LAB_LINK_PORT:-4421}
	mkdir -p "$LAB_RUN"
fi
venv_need "$REPO_ROOT/tests/requirements-molecule.txt"
command -v molecule >/dev/null || die "molecule is not installed in $VENV"
if [ "$ACTION" = setup ]; then # install only (.ci/run: before the lanes; lifecycle.sh runs molecule)
	log "molecule venv ready: $VENV ($(molecule --version 2>/dev/null | head -n 1 | tr -s ' '))"
	exit 0
fi
if "$VENV/bin/python" -m pip show -q pytest-ansible >/dev/null 2>&1; then
	log "pytest-ansible is installed in $VENV: the verifier disables it (-p no:pytest_ansible)"
fi
log "molecule $(molecule --version 2>/dev/null | head -n 1 | tr -s ' ')"

cd "$REPO_ROOT"
# The collection as Ansible finds an installed one (ANSIBLE_COLLECTIONS_PATH of the scenarios)
mkdir -p .cache/molecule-collections/ansible_collections/ipsec_offload
ln -sfn "$REPO_ROOT" .cache/molecule-collections/ansible_collections/ipsec_offload/mlx5
LOG_DIR=${MOLECULE_LOG_DIR:-$REPO_ROOT/lab/run/molecule-logs}
mkdir -p "$LOG_DIR"
run_one() { # run_one LABEL [args...]: one molecule run; its log, phase times; dies on failure
	local label=$1; shift
	local log_file t0 rc total
	log_file="$LOG_DIR/molecule-$SCENARIO-$label-$ACTION-$(date -u +%Y%m%dT%H%M%SZ).log"
	log "molecule $ACTION -s $SCENARIO ($label) $* (log: $log_file)"
	t0=$(date +%s)
	set +e
	# Each output line is prefixed with the seconds since the start: the phase timings below are read
	# from molecule's "[<scenario> > <action>] Executing" lines ("<scenario> ➜ <action>: Executing" in colour).
	ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1 molecule "$ACTION" -s "$SCENARIO" "$@" 2>&1 \
		| while IFS= read -r line; do printf '[%5ds] %s\n' "$(($(date +%s) - t0))" "$line"; done | tee "$log_file"
	rc=${PIPESTATUS[0]}
	set -e
	total=$(($(date +%s) - t0))
	printf '\n===== molecule %s -s %s (%s): phase wall times =====\n' "$ACTION" "$SCENARIO" "$label"
	awk '
		{ gsub(/\033\[[0-9;]*m/, "") }
		match($0, /^\[ *[0-9]+s\]/) { t = substr($0, 2, RLENGTH - 3) + 0 }
		/ > [a-z_]+\] Executing *$/ || / ➜ [a-z_]+: Executing *$/ {
			if (name != "") printf "%-14s %5d s\n", name, t - start
			s = $0; sub(/.*( > | ➜ )/, "", s); sub(/[]:].*/, "", s); name = s; start = t
		}
		END { if (name != "") printf "%-14s %5d s\n", name, t - start }
	' "$log_file"
	printf '%-14s %5d s\n' total "$total"
	if [ "$rc" -ne 0 ]; then
		die "molecule $ACTION -s $SCENARIO ($label) failed (rc=$rc); full log: $log_file"
	fi
	log "molecule $ACTION -s $SCENARIO ($label) passed in ${total}s (log: $log_file)"
}

if [ "$SCENARIO" = default ]; then
	# one run per example inventory (topology): each boots and destroys its own pair (molecule test)
	for inv in ${MOLECULE_LAB_INVENTORIES:-lab-vxlan lab-roce}; do
		[ -d "$REPO_ROOT/inventories/examples/$inv" ] || die "MOLECULE_LAB_INVENTORIES: no inventories/examples/$inv"
		export MOLECULE_LAB_INVENTORY=$inv
		run_one "$inv" "$@"
	done
else
	run_one "$SCENARIO" "$@"
fi
