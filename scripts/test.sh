#!/usr/bin/env bash
# The project's test command (README, `.ci/run`): sets up what it needs (apt + venv), then runs
#   1. unit tests (pytest, fixtures from real tool output)
#   2. collection build, install from the tarball, ansible-doc for every module
# Usage: scripts/test.sh [unit|build|all]   (default: all)
source "$(dirname "$0")/common.sh"
what=${1:-all}

apt_need iproute2 ethtool python3-venv
venv_need "$REPO_ROOT/tests/requirements.txt"
cd "$REPO_ROOT" || exit 1

run_unit() {
  log "unit tests"
  python -m pytest -q -p no:cacheprovider tests/unit
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
  all) run_unit; run_build ;;
  *) die "usage: scripts/test.sh [unit|build|all]" ;;
esac
