# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ipsec_offload.mlx5.ipsec_render_files: render.yml's one controller-side step.

Derives the pairs (the key store read once, here), then goes host by host: builds only that host's
SAs and SPs (_pairs.host_slice), renders them exactly as xfrm_offload_state/xfrm_offload_policy
with state=rendered do (_xfrm_run.render_config, after the modules' own argument spec), and writes
its file with the ipsec_render filter's script builder.  The files go to a 0700 staging directory
inside the render directory first and are moved into place only when every host rendered, so a bad
value refuses the run before any file is written.  No host's objects outlive its own file: the
whole mesh is never held at once (issue 18: the per-host Ansible loops cost 1.6 s per host, the
`ipsec_derived` fact of a 100-host mesh was 16.9 MB).  The result holds no key."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.ipsec_offload.mlx5.plugins.filter import ipsec_render as R
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _pairs
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _argspec
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm_run
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_policy as P
from ansible_collections.ipsec_offload.mlx5.plugins.modules import xfrm_offload_state as S
from ansible_collections.ipsec_offload.mlx5.plugins.plugin_utils import _keystore


class _Renderer:
    """The rendered path of one xfrm module, without AnsibleModule: the same argument spec, applied
    as the module applies it - `config` by _argspec (the sub-options per element, with the outcome
    of Ansible's own validator: tests/unit/plugins/module_utils/test_argspec.py), the other
    parameters by ArgumentSpecValidator - and the same validation and rendering code.

    ArgumentSpecValidator on the whole list cost about 0.3 ms per object (70 % of the render of a
    mesh host); on the few other parameters it is cheap."""

    def __init__(self, what, argument_spec, spec):
        self.what = what
        lean, self.options = _argspec.lean(argument_spec)
        self.validator = ArgumentSpecValidator(lean)
        self.spec = spec

    def params(self, host, params):
        res = self.validator.validate({k: v for k, v in params.items() if k != "config"})
        if res.error_messages:
            # the messages name options and choices, never values (the keys are no_log in the spec)
            raise AnsibleActionFail("ipsec_render_files: host %s: %s: %s" % (host, self.what, res.error_messages[0]))
        out = res.validated_parameters
        try:
            out["config"] = _argspec.apply_list(self.options, params.get("config"))
        except V.InputError as e:
            # InputError texts name the field and the choices, never a no_log value
            raise AnsibleActionFail("ipsec_render_files: host %s: %s: %s" % (host, self.what, e)) from None
        return out

    def lines(self, host, params):
        p = self.params(host, params)
        try:
            rng = X.owned_range(p.get("owned_reqid_range"))
            self.spec.kind = type(self.spec.kind)(rng)
            V.netns("namespace", p.get("namespace"))
            lines, dummy = _xfrm_run.render_config(self.spec, p, rng)
        except V.InputError as e:
            raise AnsibleActionFail("ipsec_render_files: host %s: %s: %s" % (host, self.what, e)) from None
        return lines


_PARALLEL_MIN_HOSTS = 16   # below this, one process: forking costs more than it saves


def _in_parallel(hosts, render, workers):
    """render(hosts subset) -> [names] in ``workers`` processes (fork; the parent renders a share
    too), hosts dealt round-robin; the names in ``hosts`` order.  A failure is raised in the parent
    after every child has ended (the first share's, if several failed).  Children only write their staged files
    and send back names or the error text (never a key: the messages carry none)."""
    if workers <= 1 or len(hosts) < _PARALLEL_MIN_HOSTS:
        return render(hosts)
    shares = [hosts[i::workers] for i in range(workers)]
    children = []
    for share in shares[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: never returns into Ansible
            code = 0
            try:
                os.close(r)
                try:
                    payload = {"names": render(share)}
                except AnsibleActionFail as e:
                    payload = {"error": str(e.message)}
                except BaseException as e:   # pylint: disable=broad-except
                    payload = {"error": "ipsec_render_files: a render process failed: %s" % type(e).__name__}
                data = json.dumps(payload).encode("utf-8")
                with os.fdopen(w, "wb") as fh:
                    fh.write(data)
            except BaseException:   # pylint: disable=broad-except
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r, share))
    errors = {}
    results = {}
    try:
        try:
            results[0] = render(shares[0])
        except AnsibleActionFail as e:
            errors[0] = str(e.message)
    finally:
        for i, (pid, r, share) in enumerate(children, 1):
            with os.fdopen(r, "rb") as fh:
                data = fh.read()
            dummy, status = os.waitpid(pid, 0)
            try:
                payload = json.loads(data.decode("utf-8"))
            except ValueError:
                payload = {"error": "ipsec_render_files: a render process ended without a result (status %d)" % status}
            if "error" in payload:
                errors[i] = payload["error"]
            else:
                results[i] = payload["names"]
    if errors:
        raise AnsibleActionFail(errors[min(errors)])
    order = {}
    for i, share in enumerate(shares):
        for h, name in zip(share, results[i]):
            order[h] = name
    return [order[h] for h in hosts]


def _vault_secrets(loader):
    vault = getattr(loader, "_vault", None)
    return getattr(vault, "secrets", None) or None


def _same(path, data):
    try:
        with open(path, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dest", "hosts", "keystore", "key_derivation", "reveal_keys", "features", "workers"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        with _pairs.no_gc():
            return self._run(tmp, task_vars)

    def _run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        dest, key_mode, reveal, workers = self._options(args)
        features = args.get("features")
        check = bool(self._task.check_mode)
        specs, links, rrange = self._derive(args, task_vars, key_mode, check)

        by_host = _pairs.links_by_host(specs, links)
        names = {h: R.ipsec_render_file(h) for h in by_host}   # every name checked before any work
        states = _Renderer("xfrm_offload_state", S.argument_spec(), S.StateSpec())
        policies = _Renderer("xfrm_offload_policy", P.argument_spec(), P.PolicySpec("all"))
        common = {"state": "rendered", "owned_reqid_range": list(rrange)}
        if features is not None:
            common["features"] = features

        changed = False
        if not check:
            changed = self._ensure_dir(dest)
        stage = None if check else tempfile.mkdtemp(prefix=".render-", dir=dest)   # created 0700
        written = []

        def render(hosts):
            """Render and stage ``hosts``' files; returns their names (raises AnsibleActionFail)."""
            done = []
            for h in hosts:
                sl = _pairs.host_slice(specs, h, by_host[h])
                ns = sl["namespace"] or None
                base = dict(common, **({"namespace": ns} if ns else {}))
                sa_lines = states.lines(h, dict(base, config=sl["states"], reveal_keys=reveal))
                sp_lines = policies.lines(h, dict(base, config=sl["policies"] + sl["guards"]))
                del sl
                try:
                    text = R.ipsec_render_script(h, namespace=ns or "", states=sa_lines, policies=sp_lines,
                                                 reveal=reveal)
                except Exception as e:   # the filter's AnsibleFilterError: names host and line index only
                    raise AnsibleActionFail("ipsec_render_files: %s" % e) from None
                if stage is not None:
                    self._write(os.path.join(stage, names[h]), text.encode("ascii"))
                done.append(names[h])
            return done

        try:
            written = _in_parallel(list(by_host), render, workers)
            pairs_text = "\n".join([R.PAIRS_HEADER] + [
                line for lk in sorted(links, key=lambda x: (x.src, x.dst))
                for line in R.pair_lines([_pairs.pair_summary(lk, specs)])]) + "\n"
            if stage is not None:
                self._write(os.path.join(stage, "pairs.txt"), pairs_text.encode("ascii"))
                changed = self._install(stage, dest, written + ["pairs.txt"]) or changed
        finally:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

        result.update({
            "changed": changed,
            "dest": dest,
            "files": [os.path.join(dest, n) for n in written + ["pairs.txt"]],
            "host_names": list(by_host),
            "pairs": len(links),
            "reveal_keys": reveal,
        })
        return result

    def _options(self, args):
        """(dest, key_mode, reveal, workers) from the task's arguments, each checked."""
        unknown = sorted(set(args) - self._VALID_ARGS)
        if unknown:
            raise AnsibleActionFail("ipsec_render_files: unsupported option(s) %s" % ", ".join(unknown))
        dest = args.get("dest")
        if not isinstance(dest, str) or not dest.strip():
            raise AnsibleActionFail("ipsec_render_files: dest (the render directory) is required")
        dest = os.path.normpath(os.path.expanduser(dest))
        if not os.path.isabs(dest):
            dest = os.path.join(self._loader.get_basedir(), dest)
        key_mode = args.get("key_derivation") or "keystore"
        if key_mode not in _pairs.KEY_DERIVATIONS:
            raise AnsibleActionFail("ipsec_render_files: key_derivation (ipsec_key_derivation) must be one of %s, got %r"
                                    % (", ".join(_pairs.KEY_DERIVATIONS), key_mode))
        try:
            reveal = boolean(args.get("reveal_keys", False), strict=True)
        except TypeError:
            raise AnsibleActionFail("ipsec_render_files: reveal_keys must be true or false") from None
        workers = args.get("workers")
        try:
            workers = min(os.cpu_count() or 1, 4) if workers in (None, "", "auto") else int(workers)
        except (TypeError, ValueError):
            raise AnsibleActionFail("ipsec_render_files: workers must be a number of processes or auto") from None
        if workers < 1:
            raise AnsibleActionFail("ipsec_render_files: workers must be at least 1")
        return dest, key_mode, reveal, workers

    def _derive(self, args, task_vars, key_mode, check):
        """(specs, links, reqid range): the pairs derived from the inventory and the key store."""
        master = None
        if key_mode == "hkdf":
            # read here, never an option: an option's value could be shown with the task's arguments
            master = task_vars.get("ipsec_master_secret")
            master = self._templar.template(master) if master is not None else None
            if master is None:
                raise AnsibleActionFail("ipsec_render_files: ipsec_pairs: ipsec_master_secret: ipsec_key_derivation is hkdf, "
                                        "so every key is derived from this secret: set it (from ansible-vault, at least "
                                        "32 bytes)")
            master = str(master)
        store = None
        path = args.get("keystore") or ""
        try:
            if path:
                path = _keystore.resolve(path, self._loader.get_basedir())
                doc, dummy = _keystore.read(path, _vault_secrets(self._loader))
                store = _pairs.parse_store(doc if doc is not None else {})
            elif key_mode == "hkdf":
                raise AnsibleActionFail("ipsec_render_files: ipsec_key_derivation is hkdf but ipsec_keystore_path is empty")
            hostvars = task_vars.get("hostvars")
            if hostvars is None:
                raise AnsibleActionFail("ipsec_render_files: runs in a play (it reads hostvars and groups)")
            return _pairs.derive_links(
                hostvars, hosts=args.get("hosts"), groups=task_vars.get("groups"), store=store,
                master_secret=master, lifecycle={"check_mode": check})
        except _pairs.DeriveError as e:
            raise AnsibleActionFail("ipsec_pairs: %s" % e) from None
        except _keystore.KeyStoreError as e:
            raise AnsibleActionFail("ipsec_render_files: %s" % e) from None

    @staticmethod
    def _install(stage, dest, names):
        """Every host rendered: move the staged files into place (unchanged ones stay as they are,
        their mode made 0600). True when a file changed."""
        changed = False
        for name in names:
            final = os.path.join(dest, name)
            with open(os.path.join(stage, name), "rb") as fh:
                data = fh.read()
            if _same(final, data):
                if stat.S_IMODE(os.lstat(final).st_mode) != 0o600:
                    os.chmod(final, 0o600)
                    changed = True
                continue
            os.replace(os.path.join(stage, name), final)
            changed = True
        return changed

    @staticmethod
    def _ensure_dir(dest):
        """The render directory, 0700 (made so, or set so): True if it changed."""
        made = _keystore.ensure_dir(dest)
        if made or stat.S_IMODE(os.stat(dest).st_mode) != 0o700:
            os.chmod(dest, 0o700)
            return True
        return False

    @staticmethod
    def _write(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with contextlib.closing(os.fdopen(fd, "wb")) as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
