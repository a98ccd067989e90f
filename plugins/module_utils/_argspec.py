# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible's sub-option rules for ONE list-of-dicts parameter (`config`), applied by the module.

Why: with 20,000 SAs in `config`, AnsibleModule's generic validation of the sub-options (aliases,
fallbacks, mutually exclusive checks, deprecations, no_log walks, each per element and per nested
dict) was the largest share of a module run (docs/benchmark.md).  The modules therefore give
AnsibleModule the argument spec with `config` as a plain `list` of `dict` (`lean()`), and apply
the declared sub-options here, with the same result:

* an element that is not a dict, or has an option the spec does not declare, is refused;
* defaults are set for options left out (not for options given as null), as Ansible does;
* `required` means "present" (a null value passes, as in Ansible);
* types: values already of the wanted type go through as they are; anything else is converted by
  Ansible's own checkers (check_type_str / _bool / _dict), so conversions and refusals are Ansible's;
* choices after conversion, with Ansible's 'True'/'False' quirk;
* options not given are filled with None; nested dict options are done the same way;
* every value of a no_log option is returned, to be added to the module's no_log values BEFORE any
  error is raised, so no message, result or log can carry it.

Only the spec keys listed in SUPPORTED are understood; `compile_options()` refuses any other (an
alias or a fallback added later must not be silently ignored).  tests/unit/plugins/module_utils/
test_argspec.py checks the outcome against AnsibleModule's own validation of the full spec, input by
input, and that DOCUMENTATION documents every declared sub-option exactly (validate-modules only sees
the spec given to AnsibleModule).  Errors are InputError naming the field (``config[3].aead.key``).
"""

from __future__ import annotations

from ansible.module_utils.common.validation import check_type_bool, check_type_dict, check_type_list, check_type_str

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils._validate import InputError

SUPPORTED = frozenset(("type", "required", "default", "choices", "no_log", "options", "elements"))
_CHECKERS = {"str": (str, check_type_str), "bool": (bool, check_type_bool), "dict": (dict, check_type_dict)}
_QUIRK = {"False": ("n", "no", "off", "0", "false", "f"), "True": ("y", "yes", "on", "1", "true", "t")}


class Options:
    """The compiled sub-options of one dict (or of each element of a list of dicts)."""

    def __init__(self, options, path="config"):
        self.order = []
        self.defaults = {}
        self.required = []
        self.no_log = []
        self.typed = []
        self.choices = {}
        self.nested = {}
        for name, opt in options.items():
            bad = sorted(set(opt) - SUPPORTED)
            if bad:
                raise ValueError("%s.%s: spec key(s) %s are not supported by _argspec" % (path, name, ", ".join(bad)))
            wanted = opt.get("type", "str")
            if wanted not in ("str", "bool", "dict", "raw"):
                raise ValueError("%s.%s: type %s is not supported by _argspec" % (path, name, wanted))
            if wanted != "dict" and opt.get("options"):
                raise ValueError("%s.%s: options need type dict" % (path, name))
            self.order.append(name)
            if opt.get("default") is not None:
                self.defaults[name] = opt["default"]
            if opt.get("required"):
                self.required.append(name)
            if opt.get("no_log"):
                self.no_log.append(name)
            if wanted != "raw":
                self.typed.append((name, wanted, opt.get("required", False), opt.get("default")))
            if opt.get("choices") is not None:
                self.choices[name] = list(opt["choices"])
            if opt.get("options"):
                self.nested[name] = Options(opt["options"], "%s.%s" % (path, name))
        self.names = frozenset(self.order)

    def secrets(self, item, out):
        """Add the values of no_log options in ``item`` (and its nested dicts) to ``out``."""
        if not isinstance(item, dict):
            return
        for name in self.no_log:
            if item.get(name):
                _flatten(item[name], out)
        for name, sub in self.nested.items():
            sub.secrets(item.get(name), out)

    def apply(self, field, item):
        """One dict -> the dict Ansible would hand the module.  Raises InputError naming the field."""
        if not isinstance(item, dict):
            try:
                item = check_type_dict(item)
            except (TypeError, ValueError):
                raise InputError(field, "must be a dictionary")
        unknown = [k for k in item if k not in self.names]
        if unknown:
            raise InputError(field, "unknown option(s): %s (supported: %s)" % (
                ", ".join(sorted(str(k) for k in unknown)), ", ".join(sorted(self.names))))
        out = dict(item)
        for name, value in self.defaults.items():
            if name not in out:
                out[name] = value
        for name in self.required:
            if name not in out:
                raise InputError("%s.%s" % (field, name), "is required")
        for name, wanted, required, default in self.typed:
            if name not in out:
                continue
            value = out[name]
            if value is None and not required and default is None:
                continue
            native, checker = _CHECKERS[wanted]
            if not isinstance(value, native):
                try:
                    out[name] = checker(value)
                except (TypeError, ValueError) as exc:
                    raise InputError("%s.%s" % (field, name), "must be of type %s (%s)" % (wanted, exc))
        for name, choices in self.choices.items():
            if name in out and out[name] not in choices:
                value = out[name]
                if value in _QUIRK:
                    overlap = [c for c in choices if c in _QUIRK[value]]
                    if len(overlap) == 1:
                        out[name] = value = overlap[0]
                if value not in choices:
                    raise InputError("%s.%s" % (field, name), "must be one of %s, got %r" % (
                        ", ".join(str(c) for c in choices), value))
        for name in self.order:
            if name not in out:
                out[name] = None
        for name, sub in self.nested.items():
            if out[name] is not None:
                out[name] = sub.apply("%s.%s" % (field, name), out[name])
        return out


def _flatten(value, out):
    """Ansible's reading of a no_log value: every non-empty string and every number in it, as text
    (booleans and None are not secrets)."""
    if isinstance(value, str):
        if value:
            out.add(value)
    elif isinstance(value, bytes):
        if value:
            out.add(value.decode("utf-8", "surrogateescape"))
    elif isinstance(value, dict):
        for v in value.values():
            _flatten(v, out)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _flatten(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.add(str(value))


def apply_list(options, value, name="config"):
    """The whole list parameter as Ansible hands it over: None stays None, anything else is made a list
    as Ansible makes it (check_type_list: a comma-separated string is split, a number is wrapped) and
    each element gets the sub-options.  Raises InputError naming the field."""
    if value is None:
        return None
    if not isinstance(value, list):
        try:
            value = check_type_list(value)
        except TypeError as exc:
            raise InputError(name, "must be of type list (%s)" % exc)
    return [options.apply("%s[%d]" % (name, i), item) for i, item in enumerate(value)]


def lean(spec, name="config"):
    """(the spec for AnsibleModule, with ``name`` a plain list of dicts; the compiled sub-options)."""
    full = spec[name]
    if full.get("type") != "list" or full.get("elements") != "dict" or not full.get("options"):
        raise ValueError("%s: _argspec handles a list of dicts with options" % name)
    out = dict(spec)
    out[name] = {k: v for k, v in full.items() if k != "options"}
    return out, Options(full["options"], name)
