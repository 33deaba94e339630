"""Progress of the C steps, task by task, from the engine's ``c_step_task`` events.

On a terminal a transient bar over the tasks; otherwise plain lines::

    C step 3: task 12/40 layer4.1.conv2.weight (4.1s)

printed only once a C step has run :data:`QUIET_SECONDS` (small models' C steps stay silent).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["CStepProgress", "QUIET_SECONDS"]

QUIET_SECONDS = 2.0
"""A C step that has run this long prints a plain line per task when output is not a terminal."""


class CStepProgress:
    """Subscribe :meth:`task` to ``c_step_task`` and :meth:`done` to ``direct_compression`` and
    ``c_step_end`` (before anything that prints a step row)::

        progress = CStepProgress(console())
        progress.attach(engine)
    """

    def __init__(self, console: Console, *, quiet_seconds: float | None = None) -> None:
        self.console = console
        self.quiet_seconds = QUIET_SECONDS if quiet_seconds is None else quiet_seconds
        self._progress: Progress | None = None
        self._bar: Any = None
        self._started = time.perf_counter()

    def attach(self, engine: Any) -> None:
        """Subscribe to ``engine``'s events."""
        engine.events.on("c_step_task", self.task)
        engine.events.on("direct_compression", self.done)
        engine.events.on("c_step_end", self.done)

    def task(self, *, step: int, index: int, total: int, task: Any, **_: Any) -> None:
        """Task ``index`` of ``total`` of the C step ending LC step ``step`` (0: direct compression) starts."""
        label = "direct compression" if step == 0 else f"C step {step}"
        if index == 1:
            self.done()
            self._started = time.perf_counter()
            if self.console.is_terminal:
                self._progress = Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=self.console, transient=True,
                )  # fmt: skip
                self._progress.start()
                self._bar = self._progress.add_task(label, total=total)
        if self._progress is not None:
            self._progress.update(self._bar, completed=index - 1, description=f"{label}: {task.name}")
            return
        elapsed = time.perf_counter() - self._started
        if elapsed >= self.quiet_seconds:
            self.console.print(f"{label}: task {index}/{total} {task.name} ({elapsed:.1f}s)")

    def done(self, **_: Any) -> None:
        """The C step is over: the bar goes."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
