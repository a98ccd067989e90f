# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The I/O side of xfrm_offload_state and xfrm_offload_policy: read, probe, apply one batch,
roll back, verify.  The decisions (what to change, in which order, what a failure means) are the
pure functions of _xfrm; this file only runs `ip` and strings them together.

Flow of a changing run: read current objects (one dump) -> validate, complete, plan -> check
preconditions -> ONE `ip -batch -` (key material on stdin only) -> read again and verify ->
on any failure undo what this run applied, read again and confirm the host is as before.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import re

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _steps
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._argspec import apply_list
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _xfrm as X
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._iproute2 import Ip, parse_link_names
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._resource import plan as make_plan
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._runner import (
    Runner, ToolError, batch_text, failed_batch_line, hint_for)
from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError


def kernel_release():
    return os.uname().release


def _scrubbed(exc):
    """A ToolError whose texts cannot carry key material (an `ip xfrm state` dump may)."""
    return ToolError(exc.cmd, exc.rc, X.scrub(exc.stdout), X.scrub(exc.stderr), what=exc.what)


# --------------------------------------------------------------------------------------------
# results at scale: Ansible's no_log scrub
# --------------------------------------------------------------------------------------------
# AnsibleModule.exit_json/fail_json run remove_values(result + invocation, no_log_values), which
# compares every string of the result with every secret: strings x keys.  With 20,000 SAs (20,000
# keys, the params echoed as `invocation`) that is minutes on real hardware.  lean_exit_args()
# makes it linear without weakening it: the invocation is built here with every string equal to a
# secret replaced (a set lookup), and when every secret contains a run of 40+ hex digits (all AEAD
# keys do) and no string of the whole result has such a run, no secret can be in the result, so the
# scrub has nothing to do and gets an empty secret set.  In any other case Ansible scrubs as usual.
# With output=summary the invocation is always built here, with `config` as its length
# (echoed_params): Ansible's walk and encoding of a 20,000-entry echo took a third of a no-op run.
NO_LOG_TEXT = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
HEX_RUN_RE = re.compile(r"[0-9a-fA-F]{40,}")


def _masked(obj, secrets):
    """A copy of ``obj`` with every string equal to a secret replaced (Ansible's no_log masking of
    the invocation).  Strings inside dicts and lists are tested in place: it walks 20,000 entries."""
    if isinstance(obj, str):
        return NO_LOG_TEXT if obj in secrets else obj
    if isinstance(obj, dict):
        return {k: (NO_LOG_TEXT if v in secrets else v) if isinstance(v, str) else _masked(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [(NO_LOG_TEXT if v in secrets else v) if isinstance(v, str) else _masked(v, secrets) for v in obj]
    return obj


def echoed_params(params):
    """The params as the result's `invocation` shows them.  With output=summary, `config` is shown as
    its length ("<20000 objects>", as in the module's log line): the echo of the whole list was most
    of a no-op at scale (Ansible walks every string of it for no_log values, then encodes it; the
    controller decodes and keeps it), and a summary asks for no per-object lists."""
    config = params.get("config")
    if params.get("output") == "summary" and isinstance(config, list):
        return dict(params, config="<%d objects>" % len(config))
    return params


def lean_exit_args(secrets, params, result):
    """(result to return, secrets Ansible must still scrub): see above.  Pure."""
    secrets = set(secrets or ())
    shown = echoed_params(params)
    own = shown is not params  # output=summary: this invocation, never Ansible's full echo
    if not secrets or not all(isinstance(s, str) and HEX_RUN_RE.search(s) for s in secrets):
        return (dict(result, invocation={"module_args": shown}) if own else result), secrets
    out = dict(result, invocation={"module_args": _masked(shown, secrets)})
    # One scan of the result as JSON text: hex digits are never escaped and every string is
    # quoted, so each run of hex digits in any string (or key) is a run in the text, never joined
    # to another string's; anything odd (a long number, a value str() turns into hex) can only add
    # runs and make this fall back to Ansible's scrub.
    if HEX_RUN_RE.search(json.dumps(out, default=str, ensure_ascii=False)):
        return (dict(result, invocation={"module_args": shown}) if own else result), secrets
    return out, set()


def _exit(module, _failed=False, **result):
    result, module.no_log_values = lean_exit_args(module.no_log_values, module.params, result)
    if _failed:
        module.fail_json(**result)
    module.exit_json(**result)


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off for a module run (restored after).  A run at scale
    holds a few dicts per object (the params, the parsed dump, the desired and completed objects)
    and frees them by reference counting; the collector found nothing to free in them but walked
    every live object again and again as they were allocated: about 30% of a no-op at 20,000
    objects (host, docs/benchmark.md).  The module process ends after the run."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_ABSENT = object()


class _CopyKeepingNoConfig:
    """Stands in for the `copy` module inside ansible.module_utils.basic while AnsibleModule reads its
    arguments (see _args_kept_without_config); anything else is the real module's."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, dict) and isinstance(value.get("config"), list):
            value = {k: v for k, v in value.items() if k != "config"}
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


@contextlib.contextmanager
def _args_kept_without_config():
    """ansible-core 2.19's basic._load_params() keeps a deep copy of all module arguments
    (basic._PARSED_MODULE_ARGS), of which it later reads `_ansible_tracebacks_for` only.  With
    20,000 objects in `config` that copy was a fifth of a no-op run (test_lean_config.py).  While
    it runs, the copy it keeps leaves `config` out; every other argument is copied as before.  A
    core without that copy (2.16 has no _PARSED_MODULE_ARGS) is left alone."""
    from ansible.module_utils import basic  # pylint: disable=import-outside-toplevel
    if getattr(basic, "copy", None) is not copy or not hasattr(basic, "_PARSED_MODULE_ARGS"):
        yield
        return
    basic.copy = _CopyKeepingNoConfig()
    try:
        yield
    finally:
        basic.copy = copy


class LeanConfig:
    """Mix-in before AnsibleModule for the xfrm modules, whose `config` sub-options are applied by
    _argspec (AnsibleModule gets `config` as a plain list of dicts: see _argspec for why).

    ``config_options`` is the compiled sub-options (_argspec.lean); ``apply_config()`` runs them.
    `config` is held out of AnsibleModule's own validation (``_load_params``): its validator
    deep-copies every parameter, and the copy of 20,000 dicts was a tenth of a no-op run
    (test_lean_config.py shows the copy with and without); nor is it in the copy of the arguments
    ansible-core keeps while reading them (``_args_kept_without_config``).  ``apply_config()`` puts
    it back, converts it as Ansible converts a list and applies the sub-options
    (_argspec.apply_list).
    Because AnsibleModule no longer knows which sub-options are no_log:
    * fail_json puts `config` back and registers its no_log values first: AnsibleModule.__init__
      itself fails through it (a bad `state`, say) and echoes the params as `invocation`;
    * the invocation log writes `config` as its length (it runs inside __init__, before
      apply_config).  That was also needed before: Ansible's log scrub is one replace per key over
      the text of the whole list, keys x list size (minutes with 20,000 SAs).
    Every other parameter is validated, logged and scrubbed as Ansible does.
    """

    config_options = None
    _config_given = _ABSENT  # `config` as the controller sent it, until apply_config/fail_json

    def _load_params(self):
        with _args_kept_without_config():
            super()._load_params()
        if isinstance(self.params, dict) and "config" in self.params:
            self._config_given = self.params.pop("config")

    def _restore_config(self):
        given, self._config_given = self._config_given, _ABSENT
        if given is not _ABSENT:
            self.params["config"] = given

    def _config_secrets(self):
        params = getattr(self, "params", None)
        items = params.get("config") if isinstance(params, dict) else None
        if isinstance(items, list) and self.config_options is not None:
            secrets = set()
            for item in items:
                self.config_options.secrets(item, secrets)
            self.no_log_values.update(secrets)

    def fail_json(self, msg, **kwargs):
        self._restore_config()
        self._config_secrets()
        super().fail_json(msg, **kwargs)

    def apply_config(self):
        """`config` back into the params, as a list (Ansible's conversion), each element with the
        declared sub-options (no_log values registered first)."""
        self._restore_config()
        self._config_secrets()
        try:
            self.params["config"] = apply_list(self.config_options, self.params.get("config"))
        except InputError as exc:
            self.fail_json(msg=str(exc), field=exc.field)

    def _log_invocation(self):
        given = self._config_given
        if given is _ABSENT:
            return super()._log_invocation()
        self.params["config"] = "<%d objects>" % len(given) if isinstance(given, list) else given
        try:
            return super()._log_invocation()
        finally:
            self.params["config"] = None


class _NoNamespace(Exception):
    """Check mode, and the namespace does not exist yet (an earlier task would create it)."""


class XfrmHost:
    def __init__(self, module, namespace):
        self.module = module
        self.ip = Ip(Runner(module, "ip", namespace))
        self.namespace = namespace
        self.namespace_absent = False

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ToolError as exc:
            if self.namespace and "Cannot open network namespace" in exc.stderr:
                if self.module.check_mode:
                    # In a check run the task that creates the namespace was skipped: report
                    # everything as to be added instead of failing.
                    if not self.namespace_absent:
                        self.module.warn("network namespace %s does not exist yet; check mode reports every "
                                         "object as to be added (a real run needs the namespace)" % self.namespace)
                    self.namespace_absent = True
                    raise _NoNamespace()
                raise InputError("namespace", "network namespace %s does not exist (create it first, or fix the "
                                              "name)" % self.namespace)
            raise _scrubbed(exc)

    def read(self, which):
        try:
            text = self._call(self.ip.xfrm_text, which)
        except _NoNamespace:
            return []
        return X.parse_states(text) if which == "state" else X.parse_policies(text)

    def link_names(self):
        """Interface names, or None when (check mode) the namespace does not exist yet."""
        try:
            return parse_link_names(self._call(self.ip.links_text))
        except _NoNamespace:
            return None

    def features(self, override):
        """Probe what `ip` and the kernel support; explicit values in ``override`` win."""
        override = override or {}
        feats = {}
        if any(override.get(k) is None for k in ("offload_packet", "sa_dir")):
            probe = Ip(Runner(self.module, "ip"))  # usage text does not depend on the namespace
            feats = X.parse_features(probe.state_usage(), kernel_release())
        for k in ("offload_packet", "sa_dir"):
            if override.get(k) is not None:
                feats[k] = bool(override[k])
        return feats

    def batch(self, lines):
        """Run the lines in one `ip -batch -`.  Returns (rc, stderr) with stderr scrubbed."""
        try:
            rc, _out, err = self.ip.batch(batch_text(lines))
        except ToolError as exc:
            return exc.rc, X.scrub(exc.stderr.strip() or exc.stdout.strip())
        return rc, X.scrub(err)


class Spec:
    """What differs between the state and the policy module."""

    which = None            # "state" | "policy"
    kind = None             # SAKind / SPKind instance
    label = None            # "sa" | "sp": the key naming the object in the offload report
    host_class = XfrmHost   # or a subclass (the policy module's PolicyHost)

    def validate(self, field, item, state, rng):
        raise NotImplementedError

    def complete(self, d, current):
        raise NotImplementedError

    def check(self, desired, current, features):
        """Cross-object checks (InputError) after completion."""

    def offload_report(self, desired, after):
        """Per desired object: the offload asked for and the one the kernel shows afterwards."""
        cur = {self.kind.key(c): c for c in after or []}
        report = []
        for d in desired:
            c = cur.get(self.kind.key(d))
            report.append({self.label: self.kind.describe(d),
                           "requested": d["offload"]["type"], "dev": d["offload"]["dev"],
                           "in_effect": c["offload"]["type"] if c else None,
                           "in_effect_dev": c["offload"]["dev"] if c else None})
        return report


def _render(kind, ops, features, keys):
    try:
        return X.render_ops(kind, ops, features, keys)
    except ValueError as exc:  # a key we could not read back: never guess it
        raise InputError("config", str(exc))


def validate_config(spec, params, state, rng):
    """Validate the config list (no host needed).  Raises InputError naming the field."""
    kind = spec.kind
    config = params.get("config") or []
    if state == "rendered" and not config:
        raise InputError("config", "is required for state rendered")
    if state == "overridden" and not config:
        raise InputError("config", "is empty: overridden would delete every owned object; use state deleted "
                                   "for that")
    out = []
    seen = {}
    for i, item in enumerate(config):
        field = "config[%d]" % i
        d = spec.validate(field, item, state, rng)
        k = kind.key(d)
        if k in seen:
            raise InputError(field, "%s is listed twice (also %s)" % (kind.describe(d), seen[k]))
        seen[k] = field
        out.append(d)
    if state not in ("deleted", "gathered"):
        spec.check(out, [], None)  # list-only checks (for example one key in two SAs) before any command
    return out


def complete_config(spec, validated, state, current):
    """Fill left-out fields (merged: from the current object) and defaults; cross-field checks."""
    if state == "deleted":
        return validated
    cur = {spec.kind.key(c): c for c in current} if state == "merged" else {}
    return [spec.complete(d, cur.get(spec.kind.key(d))) for d in validated]


def _preconditions(host, spec, desired, features):
    """Offload checks that need the host: keyword support, devices present."""
    devs = {}
    for d in desired:
        off = d.get("offload") or {}
        if off.get("type") == "packet" and not features.get("offload_packet"):
            raise InputError(d["field"] + ".offload.type",
                             "this iproute2 does not know 'offload packet' (needs iproute2 >= 6.2); upgrade "
                             "iproute2 or use offload type %s" % ("crypto or none" if spec.which == "state" else "none"))
        if off.get("dev"):
            devs.setdefault(off["dev"], d["field"] + ".offload.dev")
    if devs:
        names = host.link_names()
        for dev, field in devs.items():
            if names is not None and dev not in names:
                raise InputError(field, "device %s does not exist%s" % (
                    dev, " in namespace %s" % host.namespace if host.namespace else ""))


def _verify(kind, ops, after):
    """Return (op, reason) for the first op whose effect is not on the host, else None."""
    cur = {}
    for c in after:
        cur.setdefault(kind.key(c), c)
    final = {}
    for verb, obj, _old in ops:
        final[kind.key(obj)] = (verb, obj)
    for k, (verb, obj) in final.items():
        c = cur.get(k)
        if verb == "delete":
            if c is not None:
                return obj, "is still present after the delete"
        elif c is None:
            return obj, "is missing after the add"
        else:
            diff = kind.differences(c, obj)
            if diff:
                reason = "differs after the change (%s)" % ", ".join(diff)
                if "offload" in diff:
                    co, wo = c["offload"], obj["offload"]
                    reason = ("asked for %s offload on %s but the kernel reports %s" % (
                        wo["type"], wo["dev"], "no offload (software only: crypto offload fell back silently)"
                        if co["type"] == "none" else "%s offload on %s" % (co["type"], co["dev"])))
                    if wo["type"] == "crypto":
                        reason += "; set offload.fallback: allow to accept a software SA"
                return obj, reason
    return None


def batch_of(host, spec, ops, before, features):
    """The run's ops as one _steps.Batch (each op's undo: X.undo_op).  The batch back skips an SA
    whose key could not be read back (a problem, never guessed); restored() reads the host again
    and compares the touched objects with ``before``.  Returns (batch, seen): seen["sent"] = the
    undos sent, seen["final"] = what the host held after the rollback."""
    kind = spec.kind
    seen = {"sent": 0, "final": []}

    def send_back(undos):
        problems, runnable = [], []
        for op in undos:
            verb, obj, _old = op
            if verb == "add" and spec.which == "state" and not (obj.get("aead") or {}).get("key"):
                problems.append("cannot restore %s: its key could not be read back" % kind.describe(obj))
                continue
            runnable.append(op)
        if runnable:
            rc, err = host.batch(X.render_ops(kind, runnable, features, "plain"))
            if rc != 0:
                problems.append("the undo batch failed too: %s" % err)
        seen["sent"] = len(runnable)
        return problems

    def restored():
        seen["final"] = host.read(spec.which)
        return X.state_matches(kind, before, seen["final"], {kind.key(o) for _v, o, _old in ops})

    return _steps.Batch([X.undo_op(op) for op in ops], send_back, restored), seen


def _report(module, spec, result, desired, now):
    report = spec.offload_report(desired, now)
    if report is None:
        return
    result["offload"] = report
    for r in report:
        if r["requested"] not in ("none", None) and r["in_effect"] == "none":
            module.warn("%s: %s offload on %s was requested but the kernel runs it in software (fallback "
                        "allowed)" % (r.get("sa") or r.get("sp"), r["requested"], r["dev"]))


def _summarise(result):
    """output=summary: drop the per-object lists; keep offloads that are not what was asked."""
    for k in ("before", "after"):
        result.pop(k, None)
    if "offload" in result:
        result["offload"] = [r for r in result["offload"] if r["in_effect"] not in (None, r["requested"])]
    return result


def _fail(module, msg, result, **extra):
    result.update(extra)
    result.pop("changed", None)
    _exit(module, _failed=True, msg=msg, changed=bool(result.get("_host_changed")),
          **{k: v for k, v in result.items() if not k.startswith("_")})


def render_config(spec, params, rng):
    """state=rendered, no host: (the batch lines of params' config, the features used).

    Pure: the modules' rendered output and the ipsec_render_files action (render.yml writes every
    host's file in one step) both come from here.  ``spec.kind`` must be built for ``rng``.
    Raises InputError naming the field."""
    feats = dict(X.RENDER_FEATURES)
    for k, v in (params.get("features") or {}).items():
        if v is not None:
            feats[k] = bool(v)
    desired = complete_config(spec, validate_config(spec, params, "rendered", rng), "rendered", [])
    spec.check(desired, [], feats)
    ops = [("add", d, None) for d in desired]
    keys = "reveal" if params.get("reveal_keys") else "mask"
    return _render(spec.kind, ops, feats, keys), feats


def run(module, spec, params):
    """The whole module run.  Calls exit_json/fail_json."""
    state = params["state"]
    summary = params.get("output") == "summary"
    result = {"changed": False}
    work = _prepare(module, spec, params, result)
    kind, p, ops, current = work["kind"], work["plan"], work["ops"], work["current"]
    desired = work["desired"] if state != "deleted" else []

    before_owned = [c for c in current if kind.owned(c)]
    result.update(changed=bool(ops), commands=work["commands"], counts=p.counts())
    if not summary:  # output=summary leaves the per-object lists out: not built at all
        result["before"] = [kind.public(c) for c in before_owned]
    if module._diff and ops:
        result["diff"] = {
            "before": X.to_text([kind.public(c) for c in sorted(
                [c for c, _w in p.replace] + p.delete, key=kind.describe)]),
            "after": X.to_text([kind.public(d) for d in sorted(
                p.add + [w for _c, w in p.replace], key=kind.describe)]),
        }

    if not ops or module.check_mode:
        if not summary:
            gone = {kind.key(o) for o in p.delete} | {kind.key(c) for c, _w in p.replace}
            after = [c for c in before_owned if kind.key(c) not in gone] + p.add + [w for _c, w in p.replace]
            result["after"] = [kind.public(o) for o in after]
        _report(module, spec, result, desired, current if not ops else None)
        _exit(module, **(_summarise(result) if summary else result))

    after = _apply(module, spec, work, result)
    if not summary:
        result["after"] = [kind.public(c) for c in after if kind.owned(c)]
    _report(module, spec, result, desired, after)
    _exit(module, **(_summarise(result) if summary else result))


def _prepare(module, spec, params, result):
    """Validate, read, plan; exits for rendered and gathered, fails (naming the field) before any
    change. Returns {kind, host, features, current, desired, plan, ops, commands}."""
    state = params["state"]
    kind_cls = type(spec.kind)
    try:
        rng = X.owned_range(params.get("owned_reqid_range"))
        spec.kind = kind_cls(rng)
        kind = spec.kind
        V.netns("namespace", params.get("namespace"))
        if params.get("reveal_keys") and state != "rendered":
            raise InputError("reveal_keys", "is only allowed with state rendered")

        if state == "rendered":
            lines, feats = render_config(spec, params, rng)
            _exit(module, changed=False, rendered=lines, features=feats)

        validated = validate_config(spec, params, state, rng)  # before any command
        host = spec.host_class(module, params.get("namespace"))
        if state == "gathered":
            current = host.read(spec.which)
            _exit(module, changed=False, gathered=[kind.public(c) for c in current if kind.owned(c)])

        features = host.features(params.get("features"))
        result["features"] = features
        current = host.read(spec.which)
        desired = complete_config(spec, validated, state, current)
        spec.check(desired, current, features)
        if state != "deleted":
            _preconditions(host, spec, desired, features)
        p = make_plan(kind, state, desired, current)
        if p.foreign:
            cur, want = p.foreign[0]
            raise InputError(want["field"], "%s exists and is not owned by this collection (reqid outside "
                                            "0x%08x..0x%08x); it is never replaced or deleted: remove it by hand "
                                            "or pick another identity" % (kind.describe(cur), rng[0], rng[1]))
        if spec.which == "state":
            X.check_replace_keys(kind, p.replace)
            X.check_lost(kind, p.add)
        ops = X.ops_for_plan(kind, p)
        commands = _render(kind, ops, features, "mask")
        if ops:  # render the real lines now: a key we cannot render fails before any change
            _render(kind, ops, features, "plain")
    except InputError as exc:
        _fail(module, str(exc), result, field=exc.field)
    except ToolError as exc:
        _fail(module, exc.message, result, **exc.as_result())
    return {"kind": kind, "host": host, "features": features, "current": current, "desired": desired,
            "plan": p, "ops": ops, "commands": commands}


def _apply(module, spec, work, result):
    """Run the batch and read back; on a refused line or a read-back that differs, roll back and fail.
    Returns what the host holds after."""
    kind, host, ops, commands, current, features = (work["kind"], work["host"], work["ops"], work["commands"],
                                                    work["current"], work["features"])
    lines = X.render_ops(kind, ops, features, "plain")
    batch, seen = batch_of(host, spec, ops, current, features)

    def send():
        rc, err = host.batch(lines)
        return None if rc == 0 else (rc, err)

    def locate(error):  # ip names the failing line, or (a kernel refusal) the read-back tells
        n = failed_batch_line(error[1])
        return n - 1 if n else X.applied_count(kind, ops, host.read(spec.which))

    result["_host_changed"] = True  # from here on a failure (a tool error in the rollback) may leave changes
    try:
        out = batch.run(send, locate)
        if out is not None:
            rc, err = out.error
            done = out.done
            failed = ops[done] if done < len(ops) else None
            what = kind.describe(failed[1]) if failed else "the batch"
            msg = "%s failed (line %d of %d: %s): %s" % (
                what, done + 1, len(ops), commands[done] if failed else "-", err or "rc=%d" % rc)
            hint = hint_for(err)
            if hint:
                msg += " -- " + hint
            msg += (" Rolled back %d applied change(s); the host is as before." % seen["sent"] if out.restored else
                    " ROLLBACK INCOMPLETE: %s. Check the host." % ("; ".join(out.problems) or "objects differ from before"))
            result["_host_changed"] = not out.restored
            _fail(module, msg, result, failed_object=what, failed_line=done + 1, kernel_message=err,
                  hint=hint, rolled_back=out.restored,
                  after=[kind.public(c) for c in seen["final"] if kind.owned(c)])
        after = host.read(spec.which)
        bad = _verify(kind, ops, after)
        if bad is not None:
            obj, reason = bad
            out = batch.rollback(len(ops))
            msg = "%s %s. Rolled back all %d change(s)" % (kind.describe(obj), reason, seen["sent"])
            msg += "; the host is as before." if out.restored else ("; ROLLBACK INCOMPLETE: %s. Check the host." % (
                "; ".join(out.problems) or "objects differ from before"))
            result["_host_changed"] = not out.restored
            _fail(module, msg, result, failed_object=kind.describe(obj), rolled_back=out.restored,
                  after=[kind.public(c) for c in seen["final"] if kind.owned(c)])
    except ToolError as exc:
        _fail(module, exc.message, result, **exc.as_result())
    return after
