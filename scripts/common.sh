# shellcheck shell=bash
# Shared set-up for scripts/test.sh and the lab scripts: apt packages and the project venv.
# Sourced, not run.  Installs only what is missing; prints what it does; fails loudly.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${IPSEC_VENV:-$REPO_ROOT/.venv}
PY=${PYTHON:-python3}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

_apt_updated=0
apt_need() {
  # apt_need PKG... : install the Debian packages that are not installed yet.
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install: ${missing[*]}"
  if [ $_apt_updated -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    _apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

venv_need() {
  # venv_need REQUIREMENTS_FILE... : create the venv once, install requirements when they change.
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    "$PY" -m venv "$VENV" || die "python venv creation failed (apt install python3-venv?)"
  fi
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat "$@" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "pip install -r $*"
    local args=() f
    for f in "$@"; do args+=(-r "$f"); done
    "$VENV/bin/pip" install -q --disable-pip-version-check "${args[@]}" || die "pip install failed"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}
