# -*- coding: utf-8 -*-
"""The shared step/undo engine (module_utils/_steps.py): order of the steps and of their undos,
late undos, settled undos, an undo that fails, the verdict words."""

from __future__ import annotations

import pytest

from ansible_collections.ipsec_offload.mlx5.plugins.module_utils import _steps


class Boom(Exception):
    pass


def _host():
    log = []

    def step(name, undo=True, fail=False, undo_fail=False, key=None, late=False):
        def do():
            if fail:
                raise Boom("%s refused" % name)
            log.append(name)

        def back():
            if undo_fail:
                raise Boom("%s cannot be undone" % name)
            log.append("undo " + name)
        return _steps.Step(name, do, "undo " + name if undo else None, back if undo else None, key=key, late=late)
    return log, step


def test_steps_run_in_order_and_are_undone_newest_first():
    log, step = _host()
    ran = []
    run = _steps.Run(ran, (Boom,))
    with pytest.raises(Boom, match="c refused"):
        run.run_all([step("a"), step("b", undo=False), step("c", fail=True), step("d")])
    assert ran == ["a", "b"] and run.current == "c" and log == ["a", "b"]
    rb = run.rollback()
    assert rb == ["undo a: ok"] and log == ["a", "b", "undo a"]
    assert _steps.verdict(rb) == _steps.UNDONE == "every step done was undone"


def test_late_undos_run_last_in_the_order_done_and_settled_ones_not_at_all():
    log, step = _host()
    run = _steps.Run([], (Boom,))
    run.run_all([step("unbind vf1", key="vf1", late=True), step("unbind vf2", key="vf2", late=True),
                 step("mode switchdev"), step("port cap"), step("bind vf1", undo=False)])
    run.settle("vf1")
    assert run.rollback() == ["undo port cap: ok", "undo mode switchdev: ok", "undo unbind vf2: ok"]


def test_an_undo_that_fails_is_reported_and_the_others_still_run():
    log, step = _host()
    run = _steps.Run([], (Boom,))
    run.run_all([step("a"), step("b", undo_fail=True), step("c")])
    rb = run.rollback()
    assert rb == ["undo c: ok", "undo b: FAILED: b cannot be undone", "undo a: ok"]
    assert _steps.verdict(rb) == _steps.INCOMPLETE == "UNDO INCOMPLETE, see rollback"
    assert log == ["a", "b", "c", "undo c", "undo a"]


def test_errors_outside_the_declared_ones_propagate_from_an_undo():
    run = _steps.Run([], (Boom,))

    def bad():
        raise KeyError("bug")
    run.run(_steps.Step("a", lambda: None, "undo a", bad))
    with pytest.raises(KeyError):
        run.rollback()


def test_a_phase_between_steps_is_named_in_a_failure():
    log, step = _host()
    run = _steps.Run([], (Boom,))
    run.run(step("a"))
    run.at("read the new VFs")
    assert run.current == "read the new VFs" and repr(step("x")) == "Step('x')"


def _batch(undo, back_problems=(), restored=True):
    sent = []

    def send_back(undos):
        sent.append(list(undos))
        return list(back_problems)
    return _steps.Batch(undo, send_back, lambda: restored), sent


def test_batch_that_applies_needs_no_undo():
    batch, sent = _batch(["u1", "u2"])
    assert batch.run(lambda: None, lambda err: 0) is None
    assert sent == []


def test_batch_stopped_at_a_line_undoes_the_lines_before_it_newest_first_in_one_batch():
    batch, sent = _batch(["u1", None, "u3", "u4"])
    out = batch.run(lambda: "line 4 refused", lambda err: 3 if err == "line 4 refused" else -1)
    assert (out.done, out.error, out.undone, out.problems, out.restored) == (3, "line 4 refused", ["u3", "u1"], [], True)
    assert sent == [["u3", "u1"]]


def test_batch_stopped_at_the_first_line_sends_nothing_back():
    batch, sent = _batch(["u1", "u2"])
    out = batch.run(lambda: "no", lambda err: 0)
    assert out.undone == [] and sent == [] and out.restored is True


def test_batch_rollback_of_all_and_the_read_back_decides():
    batch, sent = _batch(["u1", "u2"], back_problems=["u1: No such file"], restored=False)
    out = batch.rollback(2)
    assert sent == [["u2", "u1"]] and out.problems == ["u1: No such file"] and out.restored is False and out.error is None
    batch, sent = _batch(["u1", "u2"], back_problems=["u2: never applied (tc -force)"], restored=True)
    assert batch.rollback(2).restored is True  # the host reads as before: an expected refusal does not count
