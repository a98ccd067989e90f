# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: ipsec_verify
short_description: The verify role's verdict per host and its table (one row per SA per host, NIC counters)
version_added: 0.2.0
description:
  - Takes the per-host reports of the verify role (C(verify_report), one per host of the run) and
    returns the verdict of each host with the reasons it failed, and the lines of one table for the
    run - a header, one row per counted SA of every host, one summary row per host (the traffic, the
    SAs counted, PASS or FAIL) and one row per C(ipsec_*) counter of every NIC that reports them.
  - A host passes when its traffic got through, it has SAs to count, every SA counted at least
    C(need) new packets and, when RoCE packets were counted (C(roce_total) >= 0), its SAs together
    counted at least as many packets. A host without SAs fails with a message saying so.
  - The filter is pure; reports never hold key material (SPIs, addresses and counters only).
positional: _input
options:
  _input:
    description:
      - The reports, a list of dicts (or one dict) with C(host), C(namespace), C(owned_range) (text),
        C(method), C(need), C(traffic) (text), C(traffic_ok), C(roce_total) (-1 when none),
        C(rows) (each with C(sa) (text), C(before), C(after), C(delta)) and C(nic) (netdev to
        C(before)/C(after) dicts of counters).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Verdict of this host
  ansible.builtin.set_fact:
    verify_verdict: "{{ (verify_report | ipsec_offload.mlx5.ipsec_verify).hosts[inventory_hostname] }}"

- name: One table for the run
  ansible.builtin.set_fact:
    verify_table: >-
      {{ (ansible_play_hosts | map('extract', hostvars) | selectattr('verify_report', 'defined')
          | map(attribute='verify_report') | list | ipsec_offload.mlx5.ipsec_verify).lines }}
"""

RETURN = r"""
_value:
  description: The verdicts and the table.
  type: dict
  contains:
    hosts:
      description: Per host, C(pass) (bool) and C(problems) (list of text, empty when it passed).
      type: dict
    lines:
      description: The table, one text line per row, columns aligned.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

HEADER = ("host", "SA / NIC counter", "before", "after", "delta", "need", "method", "pass")


def _int(value, what):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError("ipsec_verify: %s must be an integer, got %r" % (what, value))


def _counters(value):
    return value if isinstance(value, dict) else {}


def verdict(report):
    """(pass, [problems], [row verdicts]) of one host's report."""
    host = report.get("host", "?")
    need = _int(report.get("need", 0), "need of %s" % host)
    rows = report.get("rows") or []
    traffic_ok = boolean(report.get("traffic_ok", False), strict=False)   # "False" on ansible-core 2.16
    problems = []
    marks = []
    if not rows:
        where = (" in namespace %s" % report["namespace"]) if report.get("namespace") else ""
        problems.append("no SAs of this collection to count on %s (owned reqid range %s%s): nothing to verify; run site.yml first"
                        % (host, report.get("owned_range", "?"), where))
    if not traffic_ok:
        problems.append("the traffic did not get through (%s)" % report.get("traffic", "no traffic result"))
    total = 0
    for row in rows:
        delta = _int(row.get("delta"), "delta of %s %s" % (host, row.get("sa")))
        total += delta
        ok = traffic_ok and delta >= need
        marks.append(ok)
        if delta < need:
            problems.append("SA %s counted %d new packets, need >= %d" % (row.get("sa"), delta, need))
    roce = _int(report.get("roce_total", -1), "roce_total of %s" % host)
    if rows and roce >= 0 and total < roce:
        problems.append("the SAs counted %d packets, fewer than the %d RoCE packets the RDMA device sent and received "
                        "(RoCE that bypassed ESP?)" % (total, roce))
    return not problems, problems, marks, total


def _table(reports):
    body = []   # (host, label, before, after, delta, need, method, pass)
    for rep in reports:
        host = str(rep.get("host", "?"))
        ok, dummy, marks, total = verdict(rep)
        method = str(rep.get("method", ""))
        need = str(rep.get("need", ""))
        for row, mark in zip(rep.get("rows") or [], marks):
            body.append((host, str(row.get("sa")), str(_int(row.get("before"), "before")), str(_int(row.get("after"), "after")),
                         str(_int(row.get("delta"), "delta")), need, method, "PASS" if mark else "FAIL"))
        rows = rep.get("rows") or []
        summary = "%s; SAs counted %d, packets counted %d%s" % (
            rep.get("traffic", ""), len(rows), total,
            (" (>= RoCE packets %s)" % rep["roce_total"]) if _int(rep.get("roce_total", -1), "roce_total") >= 0 else "")
        body.append((host, summary, None, None, None, None, None, "PASS" if ok else "FAIL"))
        for dev in sorted(rep.get("nic") or {}):
            before = _counters((rep["nic"][dev] or {}).get("before"))
            after = _counters((rep["nic"][dev] or {}).get("after"))
            for name in sorted(after):
                b, a = before.get(name), after[name]
                delta = str(_int(a, name) - _int(b, name)) if b is not None else "-"
                body.append((host, "NIC %s %s" % (dev, name), "-" if b is None else str(b), str(a), delta, "", "", ""))
    rows = [r for r in body if r[2] is not None]
    width = [max([len(HEADER[i])] + [len(r[i]) for r in rows]) for i in range(len(HEADER))]
    width[0] = max([width[0]] + [len(r[0]) for r in body])

    def fmt(r):
        return ("%-*s  %-*s  %*s  %*s  %*s  %*s  %-*s  %s" % (
            width[0], r[0], width[1], r[1], width[2], r[2], width[3], r[3], width[4], r[4],
            width[5], r[5], width[6], r[6], r[7])).rstrip()
    lines = [fmt(HEADER)]
    for r in body:
        if r[2] is None:   # the host's summary: the text spans the number columns
            lines.append("%-*s  %s: %s" % (width[0], r[0], r[1], r[7]))
        else:
            lines.append(fmt(r))
    return lines


def ipsec_verify(reports):
    if isinstance(reports, dict):
        reports = [reports]
    if not isinstance(reports, (list, tuple)) or not all(isinstance(r, dict) for r in reports):
        raise AnsibleFilterError("ipsec_verify: expects a list of verify reports (dicts), got %r" % (type(reports).__name__,))
    hosts = {}
    for rep in reports:
        ok, problems, dummy, dummy2 = verdict(rep)
        hosts[str(rep.get("host", "?"))] = {"pass": ok, "problems": problems}
    return {"hosts": hosts, "lines": _table(reports)}


class FilterModule(object):
    def filters(self):
        return {"ipsec_verify": ipsec_verify}
