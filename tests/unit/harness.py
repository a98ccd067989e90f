# -*- coding: utf-8 -*-
"""Drive a module's main() in-process against a scripted host.

FakeHost stands in for AnsibleModule.run_command: every call is recorded as (argv, stdin) with
argv[0] reduced to the tool's name, and answered by the first handler that matches.  Handlers are
(prefix, result) pairs where prefix is a tuple the argv must start with (after the tool name is
reduced) and result is (rc, stdout, stderr) or a callable(argv, stdin) -> (rc, stdout, stderr).
A call that matches no handler fails the test loudly: a module must not run commands we did not
expect.
"""

from __future__ import annotations

import contextlib
import json
import os
from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19 (2.16 is the declared minimum: scripts/core216.sh)
    @contextlib.contextmanager
    def patch_module_args(args=None):
        """What 2.19's patch_module_args does, the way earlier cores read module arguments."""
        with mock.patch.object(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))):
            yield

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        return fh.read()


class UnexpectedCommand(AssertionError):
    pass


class FakeHost:
    def __init__(self, handlers=()):
        self.handlers = list(handlers)
        self.calls = []

    def on(self, prefix, result):
        self.handlers.insert(0, (tuple(prefix), result))
        return self

    def run_command(self, args, check_rc=False, data=None, binary_data=False, environ_update=None, **kw):
        argv = [os.path.basename(args[0])] + [str(a) for a in args[1:]]
        stdin = data.decode("utf-8") if isinstance(data, bytes) else data
        assert (environ_update or {}).get("LC_ALL") == "C", "commands must run with LC_ALL=C"
        self.calls.append((argv, stdin))
        for prefix, result in self.handlers:
            if tuple(argv[:len(prefix)]) == prefix:
                if callable(result):
                    return result(argv, stdin)
                return result
        raise UnexpectedCommand("unexpected command: %r (stdin=%r)" % (argv, stdin))

    def commands(self):
        return [argv for argv, dummy in self.calls]

    def stdins(self):
        return [s for dummy, s in self.calls if s is not None]


class ModuleExit(Exception):
    def __init__(self, result, failed):
        self.result = result
        self.failed = failed
        super().__init__(json.dumps(result, default=str)[:2000])


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise ModuleExit(kwargs, False)


def _fail_json(self, msg, **kwargs):
    kwargs["msg"] = msg
    kwargs["failed"] = True
    raise ModuleExit(kwargs, True)


def run_module(main, args, host, check_mode=False, diff=False, bins=None):
    """Run ``main`` with ``args``; return (result dict, failed bool).

    ``bins``: tool names that get_bin_path finds (default: all, under /usr/sbin).
    """
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True

    def get_bin_path(self, name, required=False, opt_dirs=None):
        if bins is not None and name not in bins:
            if required:
                self.fail_json(msg="Failed to find required executable \"%s\"" % name)
            return None
        return "/usr/sbin/" + name

    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, "run_command", lambda self, *a, **k: host.run_command(*a, **k)), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", get_bin_path), \
            mock.patch.object(basic.AnsibleModule, "exit_json", _exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", _fail_json):
        try:
            main()
        except ModuleExit as done:
            return done.result, done.failed
    raise AssertionError("module returned without exit_json/fail_json")
