#!/usr/bin/env bash
# Adopter test (issue 16): the collection as someone adding it to an existing infra repo sees it.
#   1. a copy of the working tree gets what a developer's tree holds by accident - revealed renders
#      (ipsec-rendered/, *.xfrm.sh), key stores (keystore*.yml, *.keystore.yml), caches (.ansible,
#      .pytest_cache, .hypothesis, .venv), lab runs and cache, tests/output - then
#      `ansible-galaxy collection build`; the tarball is listed and unpacked: none of the planted
#      files, no planted secret in any file, and no lab/, bench/, scripts/, extensions/molecule/
#   2. the tarball is installed into a temporary collections path
#   3. from an unrelated directory with its own ansible.cfg (collections_path, inventory) and a mixed
#      inventory (two IPsec groups, each with its key store in its group_vars built from
#      {{ inventory_dir }}, and a non-IPsec group), `ansible-playbook ipsec_offload.mlx5.render`
#      (FQCN, nothing from this checkout):
#        - every host: refused, the two groups' key stores named (one run uses one key store)
#        - -e ipsec_hosts=dc_ipsec (a group name, a string): the dc key store, exactly where its
#          group_vars say; the dc hosts rendered, nothing else
#        - -e '{"ipsec_hosts": ["br1", "br2"]}' (a list): the branch key store
#        - -e ipsec_hosts=dc_ipsec,web (a comma list with a non-IPsec group): no new key, store unchanged
#        - -e ipsec_hosts=gw1,nosuch: refused naming nosuch
#        - a second inventory, key store in group_vars/all from {{ inventory_dir }}, no ipsec_hosts:
#          every IPsec host rendered, the non-IPsec host ignored
#      and no key store at the default ~/.ansible/ipsec_offload_mlx5/ (HOME is a temporary one).
# No host is contacted, nothing outside a temporary directory is written. ADOPTER_KEEP=1 keeps it.
# Usage: bash scripts/adopter.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
start=$SECONDS

venv_need "$REPO_ROOT/tests/requirements.txt"

work=$(mktemp -d "${TMPDIR:-/tmp}/ipsec_offload_mlx5_adopter.XXXXXX")
if [ "${ADOPTER_KEEP:-0}" = 1 ]; then
  log "keeping $work (ADOPTER_KEEP=1)"
else
  trap 'rm -rf "$work"' EXIT
fi

last_log=
fail() {
  printf 'FAIL adopter: %s\n' "$*" >&2
  if [ -n "$last_log" ] && [ -f "$last_log" ]; then
    printf -- '--- last 40 lines of %s\n' "$last_log" >&2
    tail -n 40 "$last_log" >&2
  fi
  exit 1
}

# ---------------------------------------------------------------- 1. build from a tree with junk
src=$work/src
mkdir -p "$src"
log "copying the working tree to $src (without .git, .venv, lab/cache, lab/run*)"
tar -C "$REPO_ROOT" --exclude=./.git --exclude=./.venv --exclude=./lab/cache --exclude='./lab/run*' -cf - . \
  | tar -C "$src" -xf - || fail "copying the working tree failed"

MARK=PLANTED-ADOPTER-SECRET-5f1c
plant() {  # plant PATH... : a file holding the marker
  local f
  for f in "$@"; do
    mkdir -p "$(dirname "$src/$f")"
    printf '# %s (%s)\nkey: 0x%s\n' "$MARK" "$f" "00112233445566778899aabbccddeeff" > "$src/$f"
  done
}
planted=(
  ipsec-rendered/gw1.xfrm.sh
  ipsec-rendered/pairs.txt
  inventories/examples/lab/ipsec-rendered/lab1.xfrm.sh
  docs/stray.xfrm.sh
  keystore.yml
  keystore-lab.yml
  inventories/keystore.yml
  inventories/examples/mesh3/dc.keystore.yml
  .ansible/collections/ansible_collections/x/y/README.md
  roles/ipsec/.ansible/tmp/x.yml
  .pytest_cache/v/cache/lastfailed
  tests/unit/.pytest_cache/v/cache/nodeids
  .hypothesis/examples/x
  .venv/bin/activate
  tests/output/junit/x.xml
  lab/run/inventory.yml
  lab/run-2/keystore-vxlan.yml
  lab/cache/debian.qcow2
)
plant "${planted[@]}"
log "planted ${#planted[@]} files (revealed renders, key stores, caches, lab runs)"

dist=$work/dist
mkdir -p "$dist"
last_log=$work/build.log
ansible-galaxy collection build --output-path "$dist" "$src" >"$last_log" 2>&1 || fail "ansible-galaxy collection build failed"
tarball=$(ls "$dist"/ipsec_offload-mlx5-*.tar.gz 2>/dev/null) || fail "no tarball in $dist"
last_log=

listing=$work/tarball.txt
tar -tzf "$tarball" | sed 's#^\./##' > "$listing" || fail "cannot list $tarball"
forbidden='(^|/)ipsec-rendered(/|$)|\.xfrm\.sh$|(^|/)keystore[^/]*\.yml$|\.keystore\.yml$|(^|/)\.ansible(/|$)|(^|/)\.pytest_cache(/|$)|(^|/)\.hypothesis(/|$)|(^|/)\.venv(/|$)|^tests/output(/|$)|^(lab|bench|scripts|molecule|extensions/molecule)(/|$)'
if grep -E "$forbidden" "$listing" > "$work/packed.txt"; then
  fail "the tarball packs what it must never carry: $(tr '\n' ' ' < "$work/packed.txt")"
fi
unpacked=$work/unpacked
mkdir -p "$unpacked"
tar -C "$unpacked" -xzf "$tarball" || fail "cannot unpack $tarball"
if grep -rl "$MARK" "$unpacked" > "$work/marked.txt"; then
  fail "planted secret content found in the tarball: $(tr '\n' ' ' < "$work/marked.txt")"
fi
for f in MANIFEST.json FILES.json playbooks/render.yml playbooks/derive.yml playbooks/site.yml \
         plugins/modules/xfrm_offload_state.py plugins/filter/ipsec_pairs.py roles/ipsec/tasks/main.yml; do
  grep -qx "$f" "$listing" || fail "the tarball lacks $f"
done
# and no pattern is too broad: every file git knows (tracked, or new and not ignored) in the
# collection's own directories is shipped
git -C "$REPO_ROOT" ls-files -co --exclude-standard -- playbooks plugins roles meta inventories docs \
  | while IFS= read -r f; do [ -f "$src/$f" ] && printf '%s\n' "$f"; done | sort > "$work/wanted.txt"
[ -s "$work/wanted.txt" ] || fail "git ls-files found no collection files in $REPO_ROOT"
grep -v '/$' "$listing" | sort > "$work/packed-files.txt"
comm -23 "$work/wanted.txt" "$work/packed-files.txt" > "$work/missing.txt"
[ ! -s "$work/missing.txt" ] || fail "build_ignore drops files the collection needs: $(tr '\n' ' ' < "$work/missing.txt")"
nfiles=$(grep -vc '/$' "$listing")
log "tarball $(basename "$tarball"): $nfiles files, $(du -k "$tarball" | cut -f1) KiB; none of the planted files"

# ---------------------------------------------------------------- 2. install
colls=$work/collections
last_log=$work/install.log
ansible-galaxy collection install -p "$colls" "$tarball" >"$last_log" 2>&1 || fail "ansible-galaxy collection install failed"
[ -f "$colls/ansible_collections/ipsec_offload/mlx5/playbooks/render.yml" ] || fail "install left no playbooks/render.yml in $colls"
last_log=

# ---------------------------------------------------------------- 3. an adopter's infra repo
infra=$work/infra
home=$work/home
mkdir -p "$infra/inventory/group_vars" "$infra/inventory-all/group_vars" "$home"
cat > "$infra/ansible.cfg" <<EOF
[defaults]
inventory = inventory/hosts.yml
collections_path = $colls
retry_files_enabled = false
EOF
cat > "$infra/inventory/hosts.yml" <<'EOF'
all:
  children:
    dc_ipsec:
      hosts:
        gw1: {ipsec_local_ip: 192.0.2.1}
        gw2: {ipsec_local_ip: 192.0.2.2}
      vars:
        ipsec_meshes: [dc_ipsec]
        ipsec_dev: eth0
    branch_ipsec:
      hosts:
        br1: {ipsec_local_ip: 198.51.100.1}
        br2: {ipsec_local_ip: 198.51.100.2}
      vars:
        ipsec_meshes: [branch_ipsec]
        ipsec_dev: eth1
    web:
      hosts:
        web1: {ansible_host: 203.0.113.10}
        web2: {ansible_host: 203.0.113.11}
EOF
# shellcheck disable=SC2016  # {{ inventory_dir }} is for Ansible
printf '%s\n' 'ipsec_keystore_path: "{{ inventory_dir }}/keys/dc.keystore.yml"' > "$infra/inventory/group_vars/dc_ipsec.yml"
# shellcheck disable=SC2016
printf '%s\n' 'ipsec_keystore_path: "{{ inventory_dir }}/keys/branch.keystore.yml"' > "$infra/inventory/group_vars/branch_ipsec.yml"
cp "$infra/inventory/hosts.yml" "$infra/inventory-all/hosts.yml"
# shellcheck disable=SC2016
printf '%s\n' 'ipsec_keystore_path: "{{ inventory_dir }}/keys/site.keystore.yml"' > "$infra/inventory-all/group_vars/all.yml"

# a clean environment: only this directory's ansible.cfg and the installed tarball count
adopter_env=(env -i "PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin" "HOME=$home" "LANG=C.UTF-8" "LC_ALL=C.UTF-8"
             "ANSIBLE_NOCOLOR=1" "ANSIBLE_FORCE_COLOR=0" "TMPDIR=$work")

# play NAME EXPECT ARGS... : run ansible-playbook ipsec_offload.mlx5.render from $infra; EXPECT is ok or fail
n_play=0
play() {
  local name=$1 expect=$2 rc=0
  shift 2
  last_log=$work/play-$name.log
  (cd "$infra" && "${adopter_env[@]}" "PWD=$infra" ansible-playbook ipsec_offload.mlx5.render "$@") >"$last_log" 2>&1 || rc=$?
  n_play=$((n_play + 1))
  if [ "$expect" = ok ] && [ $rc -ne 0 ]; then fail "$name: ansible-playbook ipsec_offload.mlx5.render $* failed (rc $rc)"; fi
  if [ "$expect" = fail ] && [ $rc -eq 0 ]; then fail "$name: ansible-playbook ipsec_offload.mlx5.render $* succeeded, a refusal was expected"; fi
  log "$name: rc $rc (expected $expect)"
}
expect_in_log() {  # expect_in_log TEXT WHAT
  grep -qF -- "$1" "$last_log" || fail "$2: '$1' not in the output"
}
rendered_hosts() {  # rendered_hosts DIR -> sorted host names of DIR/*.xfrm.sh, space separated
  [ -d "$1" ] || { echo "(no directory $1)"; return 0; }
  (cd "$1" && find . -maxdepth 1 -name '*.xfrm.sh' | sed 's#^\./##; s/\.xfrm\.sh$//' | sort | tr '\n' ' ' | sed 's/ $//')
}
expect_store() {  # expect_store PATH WHAT : the key store exists there, mode 0600
  [ -f "$1" ] || fail "$2: no key store at $1 (where the inventory put ipsec_keystore_path)"
  [ "$(stat -c %a "$1")" = 600 ] || fail "$2: key store $1 has mode $(stat -c %a "$1"), not 600"
}
default_store=$home/.ansible/ipsec_offload_mlx5

# sanity of the set-up: this directory's ansible.cfg, the collection from the tarball
last_log=$work/setup.log
(cd "$infra" && "${adopter_env[@]}" ansible-playbook --version) >"$last_log" 2>&1 || fail "ansible-playbook --version failed"
expect_in_log "config file = $infra/ansible.cfg" "set-up"
(cd "$infra" && "${adopter_env[@]}" ansible-galaxy collection list ipsec_offload.mlx5) >"$last_log" 2>&1 \
  || fail "ansible-galaxy collection list ipsec_offload.mlx5 failed"
expect_in_log "$colls/ansible_collections" "set-up (collection from the tarball)"
# only the collection-path headings ("# DIR") count: Python warnings name the venv, which may live in the checkout
if grep '^# ' "$last_log" | grep -F "$REPO_ROOT" >/dev/null; then fail "set-up: the collection resolves to the checkout $REPO_ROOT"; fi

# every host: two IPsec groups with two key stores -> refused, naming both, nothing written
play all-hosts fail
expect_in_log "one run uses one key store" "all-hosts"
expect_in_log "gw1, gw2: $infra/inventory/keys/dc.keystore.yml" "all-hosts"
expect_in_log "br1, br2: $infra/inventory/keys/branch.keystore.yml" "all-hosts"
[ ! -e "$infra/inventory/keys" ] || fail "all-hosts: the refused run wrote $infra/inventory/keys"

# a group name as a string; default render directory ./ipsec-rendered of the infra repo
play group-string ok -e ipsec_hosts=dc_ipsec
expect_store "$infra/inventory/keys/dc.keystore.yml" "group-string"
[ ! -e "$infra/inventory/keys/branch.keystore.yml" ] || fail "group-string: the branch key store was written"
got=$(rendered_hosts "$infra/ipsec-rendered")
[ "$got" = "gw1 gw2" ] || fail "group-string: rendered hosts '$got', expected 'gw1 gw2'"
expect_in_log "2 directed pairs, 2 hosts" "group-string"
expect_in_log "key store: $infra/inventory/keys/dc.keystore.yml" "group-string"
if grep -q "$MARK" "$infra/ipsec-rendered/gw1.xfrm.sh"; then fail "group-string: planted content in a render"; fi
grep -q '<redacted>' "$infra/ipsec-rendered/gw1.xfrm.sh" || fail "group-string: keys not masked in the render"
dc_sum=$(sha256sum < "$infra/inventory/keys/dc.keystore.yml")

# a list of host names
play host-list ok -e '{"ipsec_hosts": ["br1", "br2"]}' -e "ipsec_render_dir=$work/r-list"
expect_store "$infra/inventory/keys/branch.keystore.yml" "host-list"
got=$(rendered_hosts "$work/r-list")
[ "$got" = "br1 br2" ] || fail "host-list: rendered hosts '$got', expected 'br1 br2'"

# a comma list, with a non-IPsec group in it: same store, no new key
play comma-list ok -e ipsec_hosts=dc_ipsec,web -e "ipsec_render_dir=$work/r-comma"
got=$(rendered_hosts "$work/r-comma")
[ "$got" = "gw1 gw2" ] || fail "comma-list: rendered hosts '$got', expected 'gw1 gw2'"
expect_in_log "new keys: none" "comma-list"
[ "$(sha256sum < "$infra/inventory/keys/dc.keystore.yml")" = "$dc_sum" ] || fail "comma-list: the dc key store changed"

# a name that is in no inventory: refused, named
play unknown-host fail -e ipsec_hosts=gw1,nosuch -e "ipsec_render_dir=$work/r-unknown"
expect_in_log "host nosuch: listed in hosts= but not in the inventory" "unknown-host"

# key store in group_vars/all from {{ inventory_dir }}, every host (non-IPsec web hosts included)
play group-vars-all ok -i inventory-all/hosts.yml -e "ipsec_render_dir=$work/r-all"
expect_store "$infra/inventory-all/keys/site.keystore.yml" "group-vars-all"
got=$(rendered_hosts "$work/r-all")
[ "$got" = "br1 br2 gw1 gw2" ] || fail "group-vars-all: rendered hosts '$got', expected 'br1 br2 gw1 gw2'"
expect_in_log "4 directed pairs, 4 hosts" "group-vars-all"

last_log=
[ ! -e "$default_store" ] || fail "a key store was written to the default $default_store: $(ls -R "$default_store")"
stores=$(cd "$infra" && find . -name '*.keystore.yml' | sort | tr '\n' ' ')
[ "$stores" = "./inventory-all/keys/site.keystore.yml ./inventory/keys/branch.keystore.yml ./inventory/keys/dc.keystore.yml " ] \
  || fail "key stores found: $stores"

printf 'PASS adopter: tarball clean (%s files; %s planted renders/key stores/caches excluded; no lab/bench/scripts/extensions/molecule), installed, %s FQCN render runs from an own ansible.cfg and mixed inventory (ipsec_hosts as group, list, comma list; key stores where group_vars put them, disagreement and unknown host refused), %ss\n' \
  "$nfiles" "${#planted[@]}" "$n_play" "$((SECONDS - start))"
