# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_render
short_description: The reviewable shell script and pair table of playbooks/render.yml
version_added: 0.1.0
description:
  - With O(what=script) (the default), the filter applied to a host name with O(namespace), O(states),
    O(policies) and O(reveal) (see EXAMPLES) turns one host's rendered C(ip xfrm) batch lines (the C(rendered) results of
    M(ipsec_offload.mlx5.xfrm_offload_state) and M(ipsec_offload.mlx5.xfrm_offload_policy)) into a
    POSIX shell script that feeds them to C(ip [-n NS] -batch -).
  - Every batch line is written as one single-quoted C(printf) argument, so no value can end a quote,
    close a here-document or start a command of its own; a line that is not printable ASCII (a line
    break, a control character) is refused, naming the host and the line, and nothing is written.
  - Host and namespace names are checked with the modules' own grammars (module_utils/_validate); a
    host name that could not be a file name in the output directory is refused.
  - With O(what=file), the script's file name for a host (refused like the script).
  - With O(what=pairs), applied to the C(pairs) list, the secret-free pair table (pairs.txt), every field checked.
positional: _input, what
options:
  _input:
    description: The inventory host name (C(script), C(file)) or the C(pairs) list of the
      C(ipsec_pairs) filter (C(pairs)).
    type: raw
    required: true
  what:
    description: What to render.
    type: str
    choices: [script, file, pairs]
    default: script
  namespace:
    description: The host's network namespace (C(script)); empty for the initial one.
    type: str
  states:
    description: The SA batch lines (C(script)).
    type: list
    elements: str
  policies:
    description: The policy batch lines (C(script)).
    type: list
    elements: str
  reveal:
    description: Whether the lines carry the real keys (only changes the file's header comment).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: One reviewable file per host
  ansible.builtin.copy:
    dest: "{{ render_dir }}/{{ host | ipsec_offload.mlx5.ipsec_render('file') }}"
    content: "{{ host | ipsec_offload.mlx5.ipsec_render('script', namespace=ns, states=sa_lines, policies=sp_lines) }}"
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The script, the file name or the table text.
  type: str
"""

import re
import shlex

from ansible.errors import AnsibleFilterError

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _validate as V

# printable ASCII: what a batch line of the modules is made of (keys are hex or <redacted>)
_LINE_RE = re.compile(r"[ -~]{1,4096}")
# inventory host names that are also safe file names (no "/", no leading ".", no white space)
_HOST_RE = re.compile(r"[A-Za-z0-9_@+=:-][A-Za-z0-9_.@+=:-]{0,252}")
_TABLE_FIELD_RE = re.compile(r"[!-~]{1,80}")


def _fail(what, msg):
    raise AnsibleFilterError("%s: %s" % (what, msg))


def _host(filt, host):
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        _fail(filt, "host %s: the inventory host name is not usable as a file name in the render directory "
                    "(letters, digits and _ . @ + = : -, not starting with .)" % V.show(host))
    return host


def _quote(line):
    """One batch line -> one single-quoted shell word (a ' inside becomes '"'"')."""
    return "'" + line.replace("'", "'\"'\"'") + "'"


def _lines(filt, host, what, lines):
    if not isinstance(lines, (list, tuple)):
        _fail(filt, "host %s: %s: must be a list of batch lines" % (host, what))
    out = []
    for i, line in enumerate(lines):
        if not isinstance(line, str) or not _LINE_RE.fullmatch(line):
            _fail(filt, "host %s: %s[%d]: %s is not one printable ASCII line; nothing was written"
                        % (host, what, i, V.show(line)))
        out.append(line)
    return out


def ipsec_render_file(host):
    return _host("ipsec_render_file", host) + ".xfrm.sh"


def ipsec_render_script(host, namespace=None, states=None, policies=None, reveal=False):
    filt = "ipsec_render_script"
    host = _host(filt, host)
    ns = namespace or None
    if ns is not None:
        try:
            V.netns("host %s: ipsec_namespace" % host, ns)
        except V.InputError as exc:
            _fail(filt, str(exc))
    sas = _lines(filt, host, "states", states or [])
    sps = _lines(filt, host, "policies", policies or [])
    out = [
        "#!/bin/sh",
        "# ip xfrm commands for %s%s, rendered by" % (host, " (network namespace %s)" % ns if ns else ""),
        "# ipsec_offload.mlx5 playbooks/render.yml from the inventory and the key store.",
        "# Keys: %s." % ("REVEALED - handle this file as a secret" if reveal else
                         "masked (re-run with -e reveal_keys=true to include them)"),
        "# The quoted lines of xfrm_batch are one `ip -batch` transaction, as the modules run it.",
        "set -e",
        "xfrm_batch() {",
        "  :",
        "  # SAs (%d): one per direction and peer" % len(sas),
    ]
    out.extend("  printf '%%s\\n' %s" % _quote(line) for line in sas)
    out.append("  # policies (%d)" % len(sps))
    out.extend("  printf '%%s\\n' %s" % _quote(line) for line in sps)
    out.append("}")
    out.append("xfrm_batch | ip %s-batch -" % (("-n %s " % shlex.quote(ns)) if ns else ""))
    return "\n".join(out) + "\n"


PAIRS_HEADER = "# directed pair          SPI         reqid       key            spi/reqid from     mode"


def ipsec_render_pairs(pairs):
    filt = "ipsec_render_pairs"
    if not isinstance(pairs, (list, tuple)):
        _fail(filt, "must be the pairs list of the ipsec_pairs filter")
    return "\n".join([PAIRS_HEADER] + list(pair_lines(pairs))) + "\n"


def pair_lines(pairs, start=0):
    """One table line per entry of an ipsec_pairs(...).pairs list (``start``: index of the first,
    for the messages); refuses a field that is not printable text of one line."""
    filt = "ipsec_render_pairs"
    for i, p in enumerate(pairs, start):
        if not isinstance(p, dict):
            _fail(filt, "pairs[%d]: not an entry of ipsec_pairs(...).pairs" % i)
        fields = []
        for k in ("name", "spi_hex", "reqid_hex", "key_source", "key_bits", "spi_source", "reqid_source", "mode"):
            v = p.get(k)
            v = str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else None
            if v is None or not _TABLE_FIELD_RE.fullmatch(v.replace(" ", "_")):
                _fail(filt, "pairs[%d].%s: %s is not printable text of one line" % (i, k, V.show(p.get(k))))
            fields.append(v)
        name, spi, reqid, ksrc, kbits, ssrc, rsrc, mode = fields
        yield "%-24s %-11s %-11s %-14s %-18s %s" % (name, spi, reqid, ksrc + "/" + kbits, ssrc + "/" + rsrc, mode)


def ipsec_render(_input, what="script", namespace=None, states=None, policies=None, reveal=False):
    if what == "script":
        return ipsec_render_script(_input, namespace, states, policies, reveal)
    if what == "file":
        return ipsec_render_file(_input)
    if what == "pairs":
        return ipsec_render_pairs(_input)
    _fail("ipsec_render", "what: %s is not one of script, file, pairs" % V.show(what))


class FilterModule(object):
    def filters(self):
        return {"ipsec_render": ipsec_render}
