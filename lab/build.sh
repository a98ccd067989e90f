#!/usr/bin/env bash
# Build (or reuse) the lab VM image: Debian rootfs (mmdebstrap) + netdevsim patched into the lab's
# simulated ConnectX (lab/sim) + ext4 -> qcow2 base.
#   build.sh [build]   build unless the cached image for the current inputs exists (prints its dir)
#   build.sh key       print the cache key (hash of packages.txt, this file, vm/*, suite, disk size)
#   build.sh dir       print the image directory for the current key (may not exist yet)
#   build.sh packages [main|build]   print the image's (variant's) package names, one a line
# Called by `lab.sh build`/`lab.sh up`; runs as root (mmdebstrap --mode=root, chroot, mkfs).
# Knobs: LAB_VARIANT (image variant: unset/strongswan = the default image; libreswan = the
#        '@libreswan' lines of packages.txt instead of the '@strongswan' ones), LAB_SUITE (trixie), LAB_MIRROR (default: the host's Debian mirror from its apt sources),
#        LAB_DISK_SIZE (4G, virtual size; qcow2 stores only used blocks), LAB_CACHE (lab/cache),
#        LAB_KEEP_ROOTFS=1 keeps the unpacked rootfs beside the image (debugging).
# Cache: lab/cache/image-<key>/ (default variant) or image-<variant>-<key>/ {base.qcow2, vmlinuz, initrd.img, manifest.txt, packages.lock};
#        lab/cache/debs/ keeps the downloaded .debs so a rebuild after an edit downloads nothing.
# shellcheck disable=SC2016 # mmdebstrap hooks and dpkg-query formats are literal on purpose
set -euo pipefail
LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LAB_CACHE:-$LAB_DIR/cache}
SUITE=${LAB_SUITE:-trixie}
DISK_SIZE=${LAB_DISK_SIZE:-4G}
DEFAULT_VARIANT=strongswan
VARIANT=${LAB_VARIANT:-$DEFAULT_VARIANT}
log() { printf '== lab build: %s\n' "$*" >&2; }
die() { printf 'ERROR: lab build: %s\n' "$*" >&2; exit 1; }

inputs=("$LAB_DIR/packages.txt" "$LAB_DIR/build.sh" "$LAB_DIR/vm/init" "$LAB_DIR/vm/customize.sh"
	"$LAB_DIR/vm/essential.sh" "$LAB_DIR"/sim/*)

variants() { # the variant names tagged in packages.txt ('@NAME pkg', NAME other than build)
	sed -n -E 's/^[[:space:]]*@([a-z0-9]+)[[:space:]].*/\1/p' "$LAB_DIR/packages.txt" | grep -vx build | sort -u
}
check_variant() {
	variants | grep -qx -- "$VARIANT" \
		|| die "unknown LAB_VARIANT '$VARIANT' (packages.txt tags: $(variants | xargs))"
}
cache_key() {
	{ cat "${inputs[@]}"; echo "suite=$SUITE disk=$DISK_SIZE variant=$VARIANT"; } | sha256sum | cut -c1-16
}
image_prefix() { # image- for the default variant, image-<variant>- for the others
	if [ "$VARIANT" = "$DEFAULT_VARIANT" ]; then echo image-; else echo "image-$VARIANT-"; fi
}
image_dir() { echo "$CACHE/$(image_prefix)$(cache_key)"; }

host_mirror() {
	# The host's Debian mirror (first "…/debian" URI in its apt sources), else deb.debian.org.
	local uri
	uri=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{for(i=2;i<=NF;i++) print $i}';
		grep -hsE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		| sed -E 's/\[[^]]*\]//' | awk '{print $2}'; } | grep -E '/debian/?$' | head -1)
	echo "${uri:-http://deb.debian.org/debian}"
}

packages() { # packages main|build : the package names of lab/packages.txt ('@build' = build-only,
	# '@VARIANT' = only in that image variant)
	local line tag
	while read -r line; do
		line=$(echo "${line%%#*}" | xargs)
		case "$line" in
			'') ;;
			@build\ *) if [ "$1" = build ]; then echo "${line#@build }"; fi ;;
			@*) tag=${line%% *} tag=${tag#@}
				if [ "$1" = main ] && [ "$tag" = "$VARIANT" ]; then echo "${line#* }"; fi ;;
			*) if [ "$1" = main ]; then echo "$line"; fi ;;
		esac
	done < "$LAB_DIR/packages.txt"
}

unmount_leftovers() { # unmount_leftovers DIR: nothing mounted under DIR afterwards, or die naming the mounts.
	# mmdebstrap may leave ROOTFS/proc mounted ("umount /proc failed: target is busy", seen on a fresh
	# machine; mkfs.ext4 -d would then copy the live /proc and fail), an interrupted build its mounts.
	local root=$1 m try p
	# a daemon a package started in the chroot (for example gpg-agent) keeps its mounts busy: stop it
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/root" 2>/dev/null)" in
			"$root" | "$root"/*)
				log "stopping pid ${p#/proc/} left running under $root: $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-60)"
				kill -TERM "${p#/proc/}" 2>/dev/null || true ;;
		esac
	done
	for try in 1 2 3; do
		m=$(findmnt -rn -o TARGET | grep -F "$root/" | sort -r) || true
		[ -n "$m" ] || return 0
		log "unmounting what is left mounted under $root: $(echo "$m" | sed "s|$root||" | xargs)"
		echo "$m" | while read -r t; do umount "$t" 2>/dev/null || umount -l "$t" 2>/dev/null || true; done
		sleep "$try"
	done
	die "mounts remain under $root: $(findmnt -rn -o TARGET | grep -F "$root/" | xargs); unmount them and build again"
}

safe_rm() { # remove a build dir without ever crossing into a mount left by an interrupted build
	local d=$1
	[ -e "$d" ] || return 0
	unmount_leftovers "$d"
	rm -rf --one-file-system "$d"
}

prune_old_images() { # keep only $1 of this variant's images; skip images a running QEMU still has open
	local keep=$1 d prefix; prefix=$(image_prefix)
	for d in "$CACHE/$prefix"*; do
		if [ ! -d "$d" ] || [ "$d" = "$keep" ]; then continue; fi
		# only this variant's images: image-<16 hex> (default) or image-<variant>-<16 hex>
		if ! [[ $(basename "$d") =~ ^${prefix}[0-9a-f]{16}$ ]]; then continue; fi
		if [ -n "$(find /proc/[0-9]*/fd -lname "$d/*" -print -quit 2>/dev/null)" ]; then
			log "keeping old $(basename "$d") (in use by a running VM)"
		else
			log "removing old $(basename "$d")"
			safe_rm "$d"
		fi
	done
}

do_build() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, chroot, mkfs)"
	local dir; dir=$(image_dir)
	mkdir -p "$CACHE"
	exec 9> "$CACHE/.build.lock"
	flock -w 1800 9 || die "another build holds $CACHE/.build.lock"
	if [ -f "$dir/manifest.txt" ]; then
		log "cached: $(basename "$dir") ($(grep -E '^kernel=' "$dir/manifest.txt"))"
		echo "$dir"
		return 0
	fi
	local t0=$SECONDS tmp="$dir.tmp" mirror=${LAB_MIRROR:-$(host_mirror)}
	local main_pkgs build_pkgs
	main_pkgs=$(packages main | paste -sd, -)
	build_pkgs=$(packages build | xargs)
	safe_rm "$tmp"
	mkdir -p "$tmp" "$CACHE/debs"
	log "mmdebstrap $SUITE from $mirror (key $(cache_key))"
	local q_lab; q_lab=$(printf %q "$LAB_DIR")
	local t1=$SECONDS
	mmdebstrap --mode=root --variant=minbase \
		--include="$main_pkgs,${build_pkgs// /,}" \
		--aptopt='Acquire::Retries "3"' \
		--setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
		--setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
		--essential-hook="$q_lab/vm/essential.sh \"\$1\"" \
		--customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
		--customize-hook="LAB_VARIANT=$VARIANT $q_lab/vm/customize.sh \"\$1\" $q_lab $build_pkgs" \
		"$SUITE" "$tmp/rootfs" "deb $mirror $SUITE main" > "$tmp/mmdebstrap.log" 2>&1 &
	# in the background so that a TERM/INT reaches mmdebstrap at once: it then unmounts and stops
	local mm=$!
	trap 'kill -TERM $mm 2>/dev/null; wait $mm; die "interrupted"' INT TERM
	wait $mm || {
		grep -E '^(E|W): |ERROR|unmet|Conflicts|Depends|Breaks' "$tmp/mmdebstrap.log" | tail -25 >&2
		die "mmdebstrap failed (log: $tmp/mmdebstrap.log); is $mirror reachable, and does $SUITE carry every package in packages.txt?"
	}
	trap - INT TERM
	local t_debootstrap=$((SECONDS - t1))
	local root=$tmp/rootfs kver
	unmount_leftovers "$root"
	kver=$(cat "$root/lab/kver")
	cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
	cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
	chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' > "$tmp/packages.lock"
	local rootfs_mb; rootfs_mb=$(du -sm --one-file-system "$root" | cut -f1)
	t1=$SECONDS
	truncate -s "$DISK_SIZE" "$tmp/root.raw"
	mkfs.ext4 -q -F -L labroot -d "$root" "$tmp/root.raw" >&2 || die "mkfs.ext4 -d failed"
	qemu-img convert -O qcow2 "$tmp/root.raw" "$tmp/base.qcow2" || die "qemu-img convert failed"
	rm -f "$tmp/root.raw"
	local t_image=$((SECONDS - t1))
	if [ -n "${LAB_KEEP_ROOTFS:-}" ]; then log "keeping the rootfs (LAB_KEEP_ROOTFS) in $(basename "$dir")/rootfs"; else safe_rm "$root"; fi
	gzip -9 "$tmp/mmdebstrap.log"
	ver() { awk -v p="$1" '$1 == p {print $2}' "$tmp/packages.lock"; }
	{
		echo "key=$(cache_key)"
		echo "variant=$VARIANT"
		echo "suite=$SUITE"
		echo "mirror=$mirror"
		echo "kernel=$kver"
		echo "linux-image=$(ver "linux-image-$kver")"
		echo "iproute2=$(ver iproute2)"
		echo "openvswitch-switch=$(ver openvswitch-switch)"
		echo "strongswan-charon=$(ver strongswan-charon)"
		echo "libreswan=$(ver libreswan)"
		echo "rdma-core=$(ver rdma-core)"
		echo "python3=$(ver python3)"
		echo "rootfs_mb=$rootfs_mb"
		echo "base_qcow2_mb=$(du -m "$tmp/base.qcow2" | cut -f1)"
		echo "time_mmdebstrap_s=$t_debootstrap"
		echo "time_image_s=$t_image"
		echo "time_total_s=$((SECONDS - t0))"
		echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	} > "$tmp/manifest.txt.new"
	mv "$tmp/manifest.txt.new" "$tmp/manifest.txt"
	safe_rm "$dir"
	mv "$tmp" "$dir"
	log "built $(basename "$dir") in $((SECONDS - t0)) s (mmdebstrap+netdevsim $t_debootstrap s, image $t_image s)"
	prune_old_images "$dir"
	echo "$dir"
}

check_variant
case "${1:-build}" in
	build) do_build ;;
	key) cache_key ;;
	dir) image_dir ;;
	packages) packages "${2:-main}" ;;
	*) die "usage: build.sh [build|key|dir|packages [main|build]]" ;;
esac
