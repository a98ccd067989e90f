#!/usr/bin/env bash
# Turn netdevsim's sources (drivers/net/netdevsim of the image kernel's linux-source) into the lab's
# simulated ConnectX: our xfrm offload (lab/sim/ipsec.c replaces ipsec.c) and the fields it keeps in
# struct nsim_ipsec. Called by lab/vm/customize.sh before the module is built; fails loudly when
# the sources do not look as expected (another kernel series), never builds a half-patched module.
#   lab/sim/apply.sh DIR        # DIR = .../drivers/net/netdevsim
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${1:?usage: apply.sh NETDEVSIM_SOURCE_DIR}
die() { echo "lab/sim/apply.sh: $*" >&2; exit 1; }
if [ ! -f "$dir/ipsec.c" ] || [ ! -f "$dir/netdevsim.h" ]; then die "$dir is not netdevsim's source directory"; fi
# struct nsim_ipsec ends with "u32 ok;": our counters go after it
grep -q '^struct nsim_ipsec {$' "$dir/netdevsim.h" || die "struct nsim_ipsec not found in netdevsim.h"
[ "$(grep -c '^	u32 ok;$' "$dir/netdevsim.h")" = 1 ] || die "netdevsim.h: expected one 'u32 ok;' line (struct nsim_ipsec)"
sed -i 's/^	u32 ok;$/	u32 ok;\n	u32 sim_policies;\n	u32 sim_packet_sa;\n	u32 sim_acq;/' "$dir/netdevsim.h"
grep -q 'u32 sim_acq;' "$dir/netdevsim.h" || die "netdevsim.h: patch did not apply"
install -m 0644 "$here/ipsec.c" "$dir/ipsec.c"
echo "lab/sim: netdevsim patched (xfrm offload as mlx5: crypto + packet, states + policies)"
