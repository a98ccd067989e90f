# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ipsec_offload.mlx5.ipsec_run_lock: runs on the controller only."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _runlock


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dummy, args = self.validate_argument_spec(argument_spec=dict(
            path=dict(type="str"),
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            timeout=dict(type="int", default=900),
            what=dict(type="str"),
        ))
        state, timeout = args["state"], args["timeout"]
        if timeout < 0:
            raise AnsibleActionFail("ipsec_run_lock: timeout must be >= 0 seconds, got %d" % timeout)
        raw = args.get("path")
        if not raw:
            # no key store (every key from the inventory): nothing shared to protect
            result.update(changed=False, skipped=True, msg="no key store: no run lock")
            return result
        try:
            path = _keystore.resolve(str(raw), self._loader.get_basedir())
        except _keystore.KeyStoreError as exc:
            raise AnsibleActionFail(str(exc)) from None
        # the worker that runs this action is a child of the ansible-playbook process: the run is its parent
        holder = _runlock.me(os.getppid(), str(args.get("what") or "ansible-playbook"))
        result["lock"] = _runlock.lock_path(path)
        if state == "released":
            # bookkeeping of the run, not a change of anything managed: a second run stays changed=0
            try:
                result.update(changed=False, released=_runlock.release(path, holder))
            except OSError as exc:
                raise AnsibleActionFail("ipsec_run_lock: %s: %s" % (getattr(exc, "filename", None) or path,
                                                                    exc.strerror or exc)) from None
            return result
        try:
            waited, stale = _runlock.acquire(path, holder, timeout)
        except TimeoutError as exc:
            raise AnsibleActionFail(
                "another playbook run holds the key store %s: %s. Runs that use one key store run one at a "
                "time (a run that read the hosts before another changed them could install a key a second "
                "time); waited %d s (ipsec_run_lock_timeout). Let it finish, or if that process is gone on "
                "another controller, remove %s" % (path, _runlock.describe(exc.args[0] if exc.args else None),
                                                   timeout, _runlock.lock_path(path))) from None
        except OSError as exc:
            raise AnsibleActionFail("ipsec_run_lock: %s: %s" % (getattr(exc, "filename", None) or path,
                                                                exc.strerror or exc)) from None
        result.update(changed=False, waited=round(waited, 1),
                      stale=_runlock.describe(stale) if stale else None)
        if waited >= 1:
            result["msg"] = "waited %d s for another run of this key store to finish" % waited
        return result
