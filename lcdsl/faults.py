"""Fault injection, for tests of what a crash leaves behind.

``LCDSL_FAULT=point:n`` makes the process kill itself (``SIGKILL``, no clean-up of any kind) the
``n``-th time it reaches ``point``; several are comma-separated. The points (:func:`fault_point`)
are ``l_step`` (a mini-batch of an L step, in :meth:`~lcdsl.engine.Engine.penalty`), ``c_step``
(after one task's projection, in :meth:`~lcdsl.engine.Engine.c_step`) and ``save`` (in
:func:`lcdsl.store.atomic.write_atomic`, after the data went to the temporary file and before it
is flushed and renamed). Unset, it costs one dict lookup.

A leaf module: the engine and the store both call it, and it imports nothing of lcdsl.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT_ENV", "fault_point"]

FAULT_ENV = "LCDSL_FAULT"
"""The environment variable of the fault-injection hook (see the module docstring)."""

_fault_counts: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Kill this process with ``SIGKILL`` if ``LCDSL_FAULT`` asks for this visit of ``point``.

    A test hook, off unless the variable is set: ``LCDSL_FAULT=c_step:5`` kills the process at
    its 5th visit of the ``c_step`` point, ``l_step:8,save:3`` at whichever comes first."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    count = _fault_counts[point] = _fault_counts.get(point, 0) + 1
    for item in wanted.split(","):
        name, _, visit = item.partition(":")
        if name.strip() == point and visit.strip() == str(count):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
