# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ipsec_offload.mlx5.ipsec_keystore: runs on the controller only."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _lifecycle


def _vault_secrets(loader):
    vault = getattr(loader, "_vault", None)
    return getattr(vault, "secrets", None) or None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("path", "pairs", "reqid_range", "rotate", "rotation_stage", "key_derivation",
                             "present", "seen", "unmanaged", "retire_hosts"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        pairs, rrange, key_mode = self._arguments(args)
        try:
            rrange = _pairs.parse_reqid_range(rrange, "reqid_range") if rrange is not None else _pairs.DEFAULT_REQID_RANGE
            path = _keystore.resolve(args["path"], self._loader.get_basedir())
            with _keystore.locked(path, create=not self._task.check_mode), _pairs.no_gc():
                doc, vault = _keystore.read(path, _vault_secrets(self._loader))
                entries = _pairs.parse_store(doc)
                links = _pairs.links_from_summary(pairs)
                _pairs.allocate(links, rrange, _pairs.pins_of(entries))
                if key_mode == "keystore":
                    _pairs.attach_keys(links, entries, require=False)
                new_entries, report = _pairs.update_store(entries, links, key_mode=key_mode)
                new_entries, rot, life, retired = self._transitions(args, new_entries, links, pairs, key_mode)
                changed = new_entries != entries or doc is None
                if changed and not self._task.check_mode:
                    _keystore.write(path, _pairs.store_document(new_entries), vault)
        except (_pairs.DeriveError, _keystore.KeyStoreError) as e:
            raise AnsibleActionFail("ipsec_keystore: %s" % e) from None
        except ValueError as e:
            raise AnsibleActionFail("ipsec_keystore: %s" % e) from None
        for w in _keystore.loose_mode_warnings(path):
            self._display.warning(w)

        live = {(lk.src, lk.dst) for lk in links}      # once: per entry it made the action O(N^4) in a mesh
        stale = sorted("%s->%s" % k for k in entries if k not in live)
        result.update({
            "changed": changed,
            "path": path,
            "encrypted": vault is not None,
            "created": report["created"],
            "pinned": report["pinned"],
            "repinned": report["repinned"],
            "unused": stale,
            "pairs": len(links),
            "rotation_started": rot["started"],
            "rotation_continuing": rot["continuing"],
            "rotation_advanced": rot["advanced"],
            "rotation_finished": rot["finished"],
            "rotations": _pairs.rotations_of(new_entries),
            "renewed": report["renewed"],
            "key_derivation": key_mode,
            # the SA lifecycle (present=): directions rotated after a loss, held (refused), and what
            # the derivation needs (no key in it)
            "rotated": life["rotated"],
            "held": {k: v["reason"] for k, v in life["held"].items()},
            "retired": retired,
            "lifecycle": {"held": life["held"], "fresh": life["fresh"],
                          "planned": life["planned"] if self._task.check_mode else {},
                          "check_mode": bool(self._task.check_mode)},
        })
        if self._task.diff and changed:
            result["diff"] = {
                "before_header": path, "after_header": path,
                "before": "".join("%s: %s\n" % ("->".join(k), _describe(entries[k])) for k in sorted(entries)),
                "after": "".join("%s: %s\n" % ("->".join(k), _describe(new_entries[k])) for k in sorted(new_entries)),
            }
        return result

    @staticmethod
    def _arguments(args):
        """(pairs: a list of pair summaries, reqid range or None, key_mode), the options checked."""
        unknown = sorted(set(args) - ActionModule._VALID_ARGS)
        if unknown:
            raise AnsibleActionFail("ipsec_keystore: unsupported option(s) %s" % ", ".join(unknown))
        if "path" not in args:
            raise AnsibleActionFail("ipsec_keystore: path is required (the key store file on the controller)")
        if "pairs" not in args:
            raise AnsibleActionFail("ipsec_keystore: pairs is required "
                                    "(hostvars | ipsec_offload.mlx5.ipsec_pairs(groups=groups, keys='none'))")
        pairs = args["pairs"]
        rrange = args.get("reqid_range")
        key_mode = args.get("key_derivation") or "keystore"
        present = args.get("present")
        if key_mode not in _pairs.KEY_DERIVATIONS:
            raise AnsibleActionFail("ipsec_keystore: key_derivation (ipsec_key_derivation) must be one of %s, got %r"
                                    % (", ".join(_pairs.KEY_DERIVATIONS), key_mode))
        if sum(args.get(x) is not None for x in ("rotate", "rotation_stage", "present", "retire_hosts")) > 1:
            raise AnsibleActionFail("ipsec_keystore: rotate (start or continue rotations), rotation_stage "
                                    "(advance the rotations in progress), present (the SA lifecycle check of "
                                    "site.yml) and retire_hosts (teardown.yml) are mutually exclusive")
        if present is not None and (not isinstance(present, Mapping) or "seen" not in args):
            raise AnsibleActionFail("ipsec_keystore: present must map each host read to its owned SAs "
                                    "(xfrm_offload_state gathered), with seen = the hosts read")
        if isinstance(pairs, Mapping):
            if rrange is None:
                rrange = pairs.get("reqid_range")
            if "hosts" in pairs:
                raise AnsibleActionFail("ipsec_keystore: pairs holds SA objects (and maybe keys); pass the "
                                        "result of ipsec_pairs(..., keys='none') or its .pairs list")
            if "packed" in pairs and "pairs" not in pairs:
                try:
                    pairs = _pairs.unpack_pairs(pairs["packed"])   # ipsec_pairs(..., keys='none', packed=true)
                except _pairs.DeriveError as e:
                    raise AnsibleActionFail("ipsec_keystore: %s" % e) from None
            else:
                pairs = pairs.get("pairs")
        if not isinstance(pairs, (list, tuple)):
            raise AnsibleActionFail("ipsec_keystore: pairs must be the result of ipsec_pairs(..., keys='none') or its .pairs list")
        return pairs, rrange, key_mode

    def _transitions(self, args, new_entries, links, pairs, key_mode):
        """What rotate / present / retire_hosts / rotation_stage (at most one) do to the entries:
        (entries, rotation report, lifecycle report, retired directions)."""
        rotate, stage = args.get("rotate"), args.get("rotation_stage")
        present, retire = args.get("present"), args.get("retire_hosts")
        rot = {"started": [], "continuing": [], "advanced": [], "finished": []}
        life = {"rotated": {}, "held": {}, "fresh": [], "planned": {}}
        retired = []
        if rotate is not None:
            chosen = _pairs.select_pairs(None if rotate == "all" else rotate, [lk.name for lk in links])
            new_entries, r = _pairs.start_rotation(new_entries, links, chosen, key_mode=key_mode)
            rot.update(r)
        if present is not None:
            new_entries, life = _lifecycle.assess(
                new_entries, links, {p["name"]: (p["src"], p["dst"]) for p in pairs},
                _lifecycle.present_from_gathered(present), [str(h) for h in args.get("seen") or []],
                unmanaged=args.get("unmanaged") or (), key_mode=key_mode)
        if retire is not None:
            new_entries, retired = _lifecycle.retire_hosts(new_entries, links, [str(h) for h in retire],
                                                           key_mode=key_mode)
        if stage is not None:
            # check mode wrote none of the stages before: let it report the whole walk
            new_entries, r = _pairs.advance_rotation(new_entries, stage, strict=not self._task.check_mode)
            rot.update(r)
        return new_entries, rot, life, retired


def _describe(entry):
    text = "key %s, spi %s, reqid %s" % (
        "<redacted>" if entry.get("key") else "(from inventory or hkdf)",
        "0x%08x" % entry["spi"] if entry.get("spi") is not None else "-",
        "0x%08x" % entry["reqid"] if entry.get("reqid") is not None else "-")
    if (entry.get("generation") or 1) > 1:
        text += ", generation %d" % entry["generation"]
    text += ", installed" if entry.get("installed", True) else ", not installed yet"
    if entry.get("retired"):
        text += ", %d retired instance(s)" % len(entry["retired"])
    if entry.get("previous") and entry.get("stage"):
        text += ", rotation %s from generation %d (spi 0x%08x, key <redacted>)" % (
            entry["stage"], entry["previous"]["generation"], entry["previous"]["spi"])
    return text
