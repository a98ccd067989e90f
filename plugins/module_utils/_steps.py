# -*- coding: utf-8 -*-
# Copyright (c) ipsec_offload.mlx5 contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The step/undo engine of the state-changing modules.

A plan is a list of named steps, each with its undo.  Check mode reports the steps' texts; the
real run executes the same steps in order through a Run, which records each step done (the
module's ``steps`` result) and its undo.  When a step fails, Run.rollback() undoes the steps done,
newest first, and says how each undo went (the module's ``rollback`` result); verdict() turns
that into the words every module's failure message ends with.

Steps that the kernel takes one command at a time (devlink, sysfs) run through Run.run().  The
xfrm and tc modules send their steps as one ``ip -batch`` / ``tc -batch`` (thousands of SAs in
one process) through Batch.run(): when the tool stops at a line, the steps before it are done,
and their undos (undo_prefix(), newest first) go back in one batch - the same rule, one process.
"""

from __future__ import annotations

UNDONE = "every step done was undone"
INCOMPLETE = "UNDO INCOMPLETE, see rollback"


class Step:
    """One named change.  ``text`` is what the result (and check mode) shows; ``do()`` makes the
    change; ``undo()`` (with ``undo_text``) puts back what it changed, or None when there is
    nothing to put back.  ``key`` names the undo so that a later step that puts it back itself
    (a VF bound again at the end of a plan) can settle it.  ``late`` undos run after the others
    (a VF is bound again only once its PF's devlink changes are undone), in the order they were
    done (the VFs come back in the order they went)."""

    __slots__ = ("text", "do", "undo_text", "undo", "key", "late")

    def __init__(self, text, do, undo_text=None, undo=None, key=None, late=False):
        self.text, self.do, self.undo_text, self.undo = text, do, undo_text, undo
        self.key, self.late = key, late

    def __repr__(self):
        return "Step(%r)" % self.text


class Run:
    """Executes steps in order, remembering how to undo each one done.

    ``ran``: the list the texts of the steps done go to (the module's result["steps"]).
    ``errors``: the exception classes a step or an undo may raise; others propagate unhandled.
    """

    def __init__(self, ran, errors):
        self.ran = ran
        self.errors = tuple(errors)
        self.current = None     # the step (or phase) running when a failure happens
        self._undo = []         # [(key, late, text, fn)] in the order done

    def at(self, text):
        """A phase between steps (reading the device, planning what depends on it): named in a failure."""
        self.current = text

    def run(self, step):
        self.current = step.text
        step.do()
        self.ran.append(step.text)
        if step.undo is not None:
            self._undo.append((step.key, step.late, step.undo_text, step.undo))

    def run_all(self, steps):
        for step in steps:
            self.run(step)

    def settle(self, key):
        """The undo named ``key`` is no longer needed (a later step did it)."""
        self._undo = [u for u in self._undo if u[0] != key]

    def rollback(self):
        """Undo the steps done, newest first (then the late undos, oldest first); each undo is
        tried even when one fails.  Returns ["<undo text>: ok" | "<undo text>: FAILED: <why>"]."""
        out = []
        todo = [u for u in reversed(self._undo) if not u[1]] + [u for u in self._undo if u[1]]
        for dummy, dummy2, text, fn in todo:
            try:
                fn()
                out.append("%s: ok" % text)
            # self.errors is a tuple of exception classes (pylint cannot tell)
            except self.errors as exc:  # pylint: disable=catching-non-exception
                out.append("%s: FAILED: %s" % (text, getattr(exc, "message", None) or exc))
        return out


class Outcome:
    """What Batch.run() / Batch.rollback() did: ``done`` steps had taken effect, ``error`` is what
    the tool said (None: a rollback after a check that failed), ``undone`` the undos sent back,
    ``problems`` what the batch back reported (with tc -force, an undo of a line that never applied
    fails and is expected), ``restored`` whether the host reads as before: the read-back decides."""

    __slots__ = ("done", "error", "undone", "problems", "restored")

    def __init__(self, done, error, undone, problems, restored):
        self.done, self.error, self.undone, self.problems, self.restored = done, error, undone, problems, restored


class Batch:
    """Steps one tool process runs line by line: ``undo[i]`` undoes step i (None: nothing to put
    back), in whatever form the caller's ``send_back`` takes.

    The caller gives four functions: ``send()`` runs the steps' lines and returns None, or the
    tool's error when it stopped; ``locate(error)`` says how many steps had taken effect (the
    failing line's number minus one, or what a read-back shows); ``send_back(undos)`` runs the undos
    in one batch and returns the problems (texts, empty when all applied); ``restored()`` reads the
    host and says whether it is as before the run.
    """

    def __init__(self, undo, send_back, restored):
        self.undo = list(undo)
        self.send_back = send_back
        self.restored = restored

    def run(self, send, locate):
        """Run the batch; None when every step applied, else the Outcome of undoing those done."""
        error = send()
        if error is None:
            return None
        return self.rollback(locate(error), error)

    def rollback(self, done, error=None):
        """Undo the first ``done`` steps (newest first, one batch) and read the host again."""
        back = undo_prefix(self.undo, done)
        problems = list(self.send_back(back)) if back else []
        return Outcome(done, error, back, problems, self.restored())


def undo_prefix(undo, applied):
    """The undos of the first ``applied`` steps of a batch (``undo[i]`` undoes step i; None: it has
    none), newest first."""
    return [u for u in reversed(undo[:applied]) if u is not None]


def verdict(rollback):
    """The end of a failure message: whether every step done was undone."""
    return UNDONE if all(r.endswith(": ok") for r in rollback) else INCOMPLETE
