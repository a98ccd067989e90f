#!/usr/bin/env bash
# Static gate 2: `ansible-lint --offline` with the production profile (settings: .ansible-lint).
#
# Usage: scripts/lint.sh [--head] [--keep] [ANSIBLE-LINT-ARGS...]
#   --head   lint the committed HEAD (git archive) instead of the working tree
#   --keep   keep the staged copy (its path is printed)
#   other arguments go to ansible-lint, e.g. `roles/ipsec` or `-p` (one line per finding)
#
# What it does, and why:
#   * its own venv (ansible-lint pins black, ruamel.yaml, yamllint, ... that the project venv does
#     not need): ${IPSEC_LINT_VENV:-~/.cache/ipsec_offload-mlx5/venv-lint} from
#     tests/requirements-lint.txt, outside the work tree so that `ansible-galaxy collection build`
#     never packs it and clones on the same machine share it; created under a lock.
#   * tests/requirements-lint-collections.txt (the `ansible` package, ~550 MB) is added only when the
#     YAML content names community.* / ansible.* collections other than ansible.builtin, since
#     Galaxy is unreachable; LINT_COLLECTIONS=1 forces it, LINT_COLLECTIONS=0 never installs it.
#   * the files git knows about (tracked and untracked-but-not-ignored; with --head: HEAD only) are
#     copied to a temporary .../ansible_collections/<namespace>/<name>/ tree and linted there with
#     ANSIBLE_COLLECTIONS_PATH pointing at it, so the collection's own modules resolve offline and
#     nothing (e.g. ansible-lint's .ansible/ cache) is written into the work tree.  The log goes to
#     tests/output/lint.log.
# Findings are printed one a line (`--format=pep8`).  Output ends with a detail line (`== lint: PASS|FAIL ...`)
# and `lint: N passed, M failed` (files processed without / with findings).  Exit 0 only on PASS.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

mode=worktree keep=0 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --head) mode='head' ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

start=$SECONDS
apt_need git python3-venv
git_err=$(git -C "$REPO_ROOT" rev-parse --is-inside-work-tree 2>&1 >/dev/null) \
  || die "git cannot read $REPO_ROOT (${git_err:-not a checkout}): lint needs git to know which files belong to the collection"
ns=$(sed -n 's/^namespace: *//p' "$REPO_ROOT/galaxy.yml")
name=$(sed -n 's/^name: *//p' "$REPO_ROOT/galaxy.yml")
if [ -z "$ns" ] || [ -z "$name" ]; then die "cannot read namespace/name from galaxy.yml"; fi

# --- stage the collection as .../ansible_collections/NS/NAME ------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/ipsec-lint.XXXXXX")
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { if [ "$keep" -eq 1 ]; then log "staged copy kept: $stage"; else rm -rf "$stage"; fi; }
trap cleanup EXIT
coll="$stage/ansible_collections/$ns/$name"
mkdir -p "$coll"
if [ "$mode" = head ]; then
  git -C "$REPO_ROOT" archive --format=tar HEAD | tar -C "$coll" -xf -
else
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null --no-recursion -T - -cf -) | tar -C "$coll" -xf -
fi
[ -f "$coll/.ansible-lint" ] || die "no .ansible-lint in the $mode tree"
log "staged $(find "$coll" -type f | wc -l) files ($mode) at $coll"

# --- the lint venv -------------------------------------------------------------------------------
reqs=("$REPO_ROOT/tests/requirements-lint.txt")
foreign=$(cd "$coll" || exit 1; grep -rhoE --include='*.yml' --include='*.yaml' --exclude-dir=fixtures \
  '\b(community|ansible)\.[a-z0-9_]+\.[a-z0-9_]+' . 2>/dev/null \
  | grep -vE '^ansible\.(builtin|legacy)\.' | cut -d. -f1,2 | sort -u | tr '\n' ' ' || true)
case "${LINT_COLLECTIONS:-auto}" in
  1) reqs+=("$REPO_ROOT/tests/requirements-lint-collections.txt") ;;
  0) [ -z "$foreign" ] || log "LINT_COLLECTIONS=0: not installing collections used by the content: $foreign" ;;
  auto) if [ -n "$foreign" ]; then
          log "content uses collections $foreign-> adding tests/requirements-lint-collections.txt"
          reqs+=("$REPO_ROOT/tests/requirements-lint-collections.txt")
        fi ;;
  *) die "LINT_COLLECTIONS must be 0, 1 or unset" ;;
esac
lint_venv=${IPSEC_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ipsec_offload-mlx5/venv-lint}
mkdir -p "$(dirname "$lint_venv")"
exec 9>"$lint_venv.lock"
flock 9 || die "cannot lock $lint_venv.lock"
VENV=$lint_venv venv_need "${reqs[@]}"
flock -u 9
command -v ansible-lint >/dev/null || die "ansible-lint not found in $lint_venv"

# --- run ---------------------------------------------------------------------------------------
mkdir -p "$REPO_ROOT/tests/output"
logf="$REPO_ROOT/tests/output/lint.log"
version=$(ansible-lint --nocolor --version 2>/dev/null | sed -n '1s/^ansible-lint \([^ ]*\).*/\1/p')
log "ansible-lint $version --offline ${args[*]:-}  (log: tests/output/lint.log)"
rc=0
(cd "$coll" && ANSIBLE_COLLECTIONS_PATH="$stage" NO_COLOR=1 ansible-lint --offline --nocolor --format=pep8 "${args[@]}") 2>&1 \
  | tee "$logf" || rc=$?

# --format=pep8: one `path:line[:col]: rule: message` line per finding; count files, not findings
processed=$(sed -n 's/^\(Passed\|Failed\): .* in \([0-9]*\) files processed.*/\2/p' "$logf" | tail -1)
findings=$(grep -cE '^[^ :]+:[0-9]+(:[0-9]+)?: [a-z-]+(\[[a-z-]+\])?: ' "$logf" || true)
bad_files=$({ grep -oE '^[^ :]+:[0-9]+(:[0-9]+)?: [a-z-]+(\[[a-z-]+\])?: ' "$logf" || true; } | cut -d: -f1 | sort -u | wc -l)
took=$((SECONDS - start))
what="ansible-lint $version, production profile, $mode"
if [ "$rc" -eq 0 ] && [ -n "$processed" ]; then
  echo "== lint: PASS $processed files, $findings findings ($what) in ${took}s"
  echo "lint: $processed passed, 0 failed"
  exit 0
fi
[ "$bad_files" -eq 0 ] && bad_files=1   # failed without a finding line (crash, bad config): count one
echo "== lint: FAIL $findings findings in $bad_files files (exit $rc, $what) in ${took}s; log: tests/output/lint.log"
echo "lint: $(( ${processed:-0} > bad_files ? ${processed:-0} - bad_files : 0 )) passed, $bad_files failed"
exit 1
