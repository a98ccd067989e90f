#!/usr/bin/env bash
# mmdebstrap --essential-hook for the lab image (runs before the kernel is installed):
#   essential.sh ROOTFS
# A small initrd: only the drivers to find and mount the root disk (and the NICs, since the
# VM runs without udev), loaded explicitly. Files written here are owned by no package.
set -euo pipefail
root=$1
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks"
cat > "$root/etc/initramfs-tools/conf.d/lab.conf" <<'CONF'
# lab VM: only the modules named by hooks/lab, no autodetection
MODULES=list
CONF
cat > "$root/etc/initramfs-tools/hooks/lab" <<'HOOK'
#!/bin/sh
# lab VM initrd: load the virtio drivers and ext4 explicitly (force_load = copy + load at boot),
# and leave udev out (rdma-core pulls udev into the image; in the initrd it costs seconds of
# TCG boot time and nothing needs it: devtmpfs makes /dev/vda, /lab/init names the NICs).
PREREQ="" # hooks in /etc run after those in /usr/share (udev's included)
case "$1" in prereqs) echo "$PREREQ"; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_blk virtio_net virtio_rng ext4; do force_load "$m"; done
rm -f "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/init-bottom/udev"
rm -rf "$DESTDIR/usr/lib/systemd" "$DESTDIR/usr/lib/x86_64-linux-gnu/systemd" "$DESTDIR/usr/lib/udev" "$DESTDIR/etc/udev" \
	"$DESTDIR/usr/bin/udevadm" "$DESTDIR/bin/udevadm" "$DESTDIR/sbin/udevadm"
HOOK
chmod 0755 "$root/etc/initramfs-tools/hooks/lab"
