#!/usr/bin/env bash
# The project's test command (README, `.ci/run`): sets up what it needs (apt + venv), then runs
#   1. unit tests (pytest: tests/unit incl. the reliability suite and the real-kernel `netns`
#      tests, tests/sanity, tests/lab's no-VM tests), fixtures from real tool output
#   2. collection build, install from the tarball, ansible-doc for every module
#   3. ansible-test sanity (scripts/sanity.sh --pythons)
#   4. ansible-lint, production profile (scripts/lint.sh)
# Usage: scripts/test.sh [unit|build|sanity|lint|all]   (default: all)
source "$(dirname "$0")/common.sh"
what=${1:-all}

apt_need iproute2 ethtool python3-venv
venv_need "$REPO_ROOT/tests/requirements.txt"
cd "$REPO_ROOT" || exit 1

run_unit() {
  log "unit tests"
  local extra=()
  [ -f tests/lab/test_lab_cli.py ] && extra+=(tests/lab/test_lab_cli.py)
  [ -f tests/lab/test_pcap_esp.py ] && extra+=(tests/lab/test_pcap_esp.py)   # the lifecycle suite's capture reader
  [ -f tests/lab/test_verify_table.py ] && extra+=(tests/lab/test_verify_table.py)   # the lab's reader of the verify table
  [ -f tests/lab/test_pyzip_cache.py ] && extra+=(tests/lab/test_pyzip_cache.py)   # the lab VMs' cache of compiled module zips
  [ -f tests/lab/test_reliability_lib.py ] && extra+=(tests/lab/test_reliability_lib.py)   # the reliability suite's helpers (its checks, tests/lab/test_reliability.py, run in the lab)
  python -m pytest -q -p no:cacheprovider tests/unit tests/sanity "${extra[@]}"
}

run_build() {
  log "galaxy build + install + ansible-doc"
  local out; out=$(mktemp -d)
  ansible-galaxy collection build --force --output-path "$out" . >/dev/null
  local tarball; tarball=$(ls "$out"/ipsec_offload-mlx5-*.tar.gz)
  ansible-galaxy collection install --force -p "$out/collections" "$tarball" >/dev/null
  local m n=0
  for m in plugins/modules/*.py; do
    m=$(basename "$m" .py)
    ANSIBLE_COLLECTIONS_PATH="$out/collections" ansible-doc "ipsec_offload.mlx5.$m" >/dev/null \
      || die "ansible-doc ipsec_offload.mlx5.$m failed"
    n=$((n + 1))
  done
  log "built $(basename "$tarball"), installed it, ansible-doc rendered $n modules"
  rm -rf "$out"
}

case "$what" in
  unit) run_unit ;;
  build) run_build ;;
  sanity) bash scripts/sanity.sh --pythons ;;
  lint) bash scripts/lint.sh ;;
  all) run_unit; run_build; bash scripts/sanity.sh --pythons; bash scripts/lint.sh ;;
  *) die "usage: scripts/test.sh [unit|build|sanity|lint|all]" ;;
esac
