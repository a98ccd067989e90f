#!/usr/bin/env bash
# Static gate 1: `ansible-test sanity` (ansible-core 2.19) on the collection, offline-capable.
#
# Usage: scripts/sanity.sh [--head] [--pythons] [ANSIBLE-TEST-SANITY-ARGS...]
#   --head     test the committed HEAD (git archive) instead of the working tree
#   --pythons  also run the compile and import tests on every other target Python (3.8-3.13) that
#              is installed (PATH, pyenv): modules run on managed hosts with older Pythons
#   other arguments go to `ansible-test sanity`, e.g. `--test pylint` or `--skip-test shellcheck`
#
# What it does, and why:
#   * apt: git, shellcheck (the shellcheck sanity test is skipped with a mere warning without it),
#     python3-venv (ansible-test makes one venv per sanity test).
#   * the project venv (scripts/common.sh, tests/requirements.txt) provides ansible-core and with it
#     ansible-test.  The sanity tools (pylint, yamllint, voluptuous, ...) are not put in it:
#     `--venv` makes ansible-test install its own pinned versions into per-test venvs cached under
#     ~/.ansible/test/venv/ (first run ~1 min, later runs reuse them).
#   * ansible-test bootstraps pip into those venvs with a get-pip script it downloads from a host
#     that is not reachable here.  It first looks for ~/.ansible/test/cache/get_pip_<X_Y>.py; we
#     put tests/sanity/get_pip_offline.py there (ensurepip + `pip install pip==X.Y` from the
#     package index).  A real get-pip script already in that place is left alone.
#   * ansible-test wants the tree at .../ansible_collections/<namespace>/<name>/.  The repo root is
#     the collection root, so the files git knows about (tracked and untracked-but-not-ignored;
#     with --head: HEAD only) are copied into a tree of that shape and tested there:
#     ${IPSEC_SANITY_STAGE:-~/.cache/ipsec-sanity}/ansible_collections/<ns>/<name>/.  Its
#     tests/output/.tmp/delegation venv (ansible-test's own controller venv) is kept between runs,
#     everything else is copied afresh; so a warm run needs no package index at all.
#     Nothing is written into the work tree except the log, tests/output/sanity.log.
#   * one run at a time per user (flock on ~/.ansible/test/ipsec-sanity.lock): the stage and the
#     cached venvs are shared and ansible-test does not lock them.
# Output ends with a detail line (`== sanity: PASS|FAIL ...`: failed tests, versions, time) and
# `sanity: N passed, M failed` (sanity tests; a test that aborted the run counts as failed).
# Exit status 0 only when every test ran and passed.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

mode=worktree pythons=0 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --head) mode='head' ;;
    --pythons) pythons=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) args+=("$1") ;;
  esac
  shift
done

start=$SECONDS
apt_need git shellcheck python3-venv
venv_need "$REPO_ROOT/tests/requirements.txt"
command -v ansible-test >/dev/null || die "ansible-test not found in $VENV (ansible-core install broken?)"
if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ]; then die "HOME is not set to a directory (ansible-test keeps its caches there)"; fi
git_err=$(git -C "$REPO_ROOT" rev-parse --is-inside-work-tree 2>&1 >/dev/null) \
  || die "git cannot read $REPO_ROOT (${git_err:-not a checkout}): sanity needs git to know which files belong to the collection"

pyver=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ns=$(sed -n 's/^namespace: *//p' "$REPO_ROOT/galaxy.yml")
name=$(sed -n 's/^name: *//p' "$REPO_ROOT/galaxy.yml")
if [ -z "$ns" ] || [ -z "$name" ]; then die "cannot read namespace/name from galaxy.yml"; fi

mkdir -p "$HOME/.ansible/test/cache"
exec 9>"$HOME/.ansible/test/ipsec-sanity.lock"
flock -n 9 || { log "waiting for another sanity run to finish"; flock 9; }

# --- offline pip bootstrap for ansible-test's venvs -------------------------------------------
pipver=$(python - "$pyver" <<'EOF'
import sys
import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))['pip'])
EOF
) || die "cannot ask ansible-test which pip version it bootstraps (ansible-test internals changed?)"
shim_src="$REPO_ROOT/tests/sanity/get_pip_offline.py"
shim_dst="$HOME/.ansible/test/cache/get_pip_${pipver//./_}.py"
if [ ! -e "$shim_dst" ]; then
  log "installing offline pip bootstrap for ansible-test: $shim_dst"
  cp "$shim_src" "$shim_dst"
elif grep -q 'Offline stand-in for ansible-test' "$shim_dst"; then
  cmp -s "$shim_src" "$shim_dst" || cp "$shim_src" "$shim_dst"
else
  log "keeping the pip bootstrap script already at $shim_dst"
fi

# --- stage the collection as .../ansible_collections/NS/NAME ------------------------------------
stage=${IPSEC_SANITY_STAGE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipsec-sanity}
coll="$stage/ansible_collections/$ns/$name"
deleg="tests/output/.tmp/delegation"
# ansible-test's venv scripts get a shebang of this length; Linux cuts shebangs at 127 bytes.
if [ $((${#coll} + ${#deleg} + 22)) -gt 127 ]; then
  stage=$(mktemp -d /tmp/ipsec-sanity.XXXXXX)
  log "stage path too long for venv shebangs; using the throw-away $stage instead"
  coll="$stage/ansible_collections/$ns/$name"
fi
mkdir -p "$stage"
kept="$stage/delegation.keep"
stamp="$stage/delegation.python"
want_stamp="$pyver $(python -c 'import sys; print(sys.base_prefix)')"
rm -rf "$kept"
if [ -d "$coll/$deleg" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
  mv "$coll/$deleg" "$kept"
fi
rm -rf "$stage/ansible_collections"
mkdir -p "$coll"
if [ "$mode" = head ]; then
  git -C "$REPO_ROOT" archive --format=tar HEAD | tar -C "$coll" -xf -
else
  # tracked files that still exist + untracked files that .gitignore does not exclude
  (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null --no-recursion -T - -cf -) | tar -C "$coll" -xf -
fi
if [ -d "$kept" ]; then
  mkdir -p "$(dirname "$coll/$deleg")"
  mv "$kept" "$coll/$deleg"
fi
echo "$want_stamp" > "$stamp"
log "staged $(find "$coll" -path "$coll/tests/output" -prune -o -type f -print | wc -l) files ($mode) at $coll"

# --- run ---------------------------------------------------------------------------------------
mkdir -p "$REPO_ROOT/tests/output"
logf="$REPO_ROOT/tests/output/sanity.log"
log "ansible-test sanity --venv --python $pyver ${args[*]:-}  (log: tests/output/sanity.log)"
rc=0
(cd "$coll" && ansible-test sanity --venv --python "$pyver" --color no "${args[@]}") 2>&1 | tee "$logf" || rc=$?

also=""
if [ "$pythons" -eq 1 ]; then
  versions=$(python -c 'from ansible_test._internal.constants import SUPPORTED_PYTHON_VERSIONS as v; print(" ".join(v))')
  # shellcheck disable=SC2086  # one argument per version
  found=$(python "$REPO_ROOT/tests/sanity/find_pythons.py" "$pyver" $versions)
  if [ -z "$found" ]; then
    log "--pythons: no other target Python installed; compile/import ran on $pyver only"
  else
    also=$(cut -d' ' -f1 <<<"$found" | paste -sd' ')
    # ansible-test takes pythonX.Y from PATH: the found directories first, and no pyenv shims
    # (a shim for a non-global version exits 127, which ansible-test reports as a failed test).
    xpath="$VENV/bin:$(cut -d' ' -f2 <<<"$found" | paste -sd:):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    log "ansible-test sanity --venv --test compile --test import on Python $pyver $also"
    (cd "$coll" && PATH="$xpath" ansible-test sanity --venv --test compile --test import --color no) 2>&1 \
      | tee -a "$logf" || rc=$?
  fi
fi

ran=$(grep -c '^Running sanity test' "$logf" || true)
absent=$(sed -n 's/^WARNING: Required program "\(.*\)" not found.*/\1/p' "$logf" | sort -u | tr '\n' ' ')
if grep -q '^FATAL: The [0-9]* sanity test(s) listed below' "$logf"; then
  # ansible-test's closing list of failed tests, one name a line
  failed=$(awk '/^FATAL: The [0-9]+ sanity test\(s\) listed below/ {on=1; next}
                on && /^FATAL/ {on=0} on && NF==1 {printf "%s ", $1}' "$logf")
else
  # no closing list: a test failed when an ERROR/FATAL line follows its "Running sanity test" line
  failed=$(awk '/^Running sanity test "/ {split($0, q, "\""); cur=q[2]; next}
                cur != "" && /^(ERROR|FATAL):/ && !(cur in bad) {bad[cur]=1; printf "%s ", cur}' "$logf")
fi
if [ "$rc" -ne 0 ] && ! grep -q '^FATAL: The [0-9]* sanity test(s) listed below' "$logf"; then
  # ansible-test stopped without its closing list: the last test crashed (validate-modules does on
  # documentation YAML it cannot parse, without naming the file) and the tests after it did not run.
  last=$(sed -n 's/^Running sanity test "\([^"]*\)".*/\1/p' "$logf" | tail -1)
  failed="${failed% } (${last:-?} aborted the run) "
  if [ "$last" = validate-modules ]; then
    log "plugin documentation blocks that YAML cannot load:"
    python "$REPO_ROOT/tests/sanity/doc_yaml_check.py" "$coll" >&2 || true
  fi
fi
took=$((SECONDS - start))
what="ansible-core $(ansible --version | sed -n '1s/.*core \([0-9.]*\).*/\1/p'), py$pyver${also:+ + compile/import on $also}, $mode"
nfailed=$(printf '%s' "$failed" | sed 's/ (.*aborted the run)//' | wc -w)
if [ "$rc" -eq 0 ] && [ -z "$absent" ] && [ "$ran" -gt 0 ]; then
  echo "== sanity: PASS ($what) in ${took}s"
  echo "sanity: $ran passed, 0 failed"
  exit 0
fi
[ -n "$absent" ] && log "sanity tests were skipped for want of: $absent"
[ "$rc" -ne 0 ] && [ "$nfailed" -eq 0 ] && nfailed=1   # failed without naming a test: count one
echo "== sanity: FAIL ${failed:+tests: $failed}${absent:+skipped (missing: $absent) }(exit $rc, $what) in ${took}s"
echo "sanity: $((ran > nfailed ? ran - nfailed : 0)) passed, $nfailed failed"
exit 1
