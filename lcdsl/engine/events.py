"""What an LC run reports: a :class:`StepRecord` per step, and a small publish/subscribe bus
with a fixed set of event names.

The engine announces each phase of :meth:`lcdsl.engine.Engine.run` so progress bars, loggers,
checkpointers and learning-rate schedules can hook in without subclassing::

    engine.events.on("lc_step_end", lambda engine, record: print(record.to_dict()))

Every callback is called with keyword arguments only (the payload below), so a callback may
take just the ones it needs plus ``**_``. A callback's exception propagates: it is a bug in the
callback, and the run stops there.

Event names and payloads (``step`` is the LC step's number, 1-based; direct compression is
step 0; it is also the ``step`` of the record the step produces):

- ``"direct_compression"``: ``engine``, ``record`` (a :class:`~lcdsl.engine.StepRecord` with
  ``mu=0``), after ``θ = Π(w)``.
- ``"lc_step_start"``: ``engine``, ``step``, ``mu``, before the L step.
- ``"l_step_end"``: ``engine``, ``step``, ``mu``, ``loss`` (float or None), after the L step.
- ``"c_step_end"``: ``engine``, ``step``, ``mu``, after the C step and the multiplier step.
- ``"lc_step_end"``: ``engine``, ``record``, once the step's record is in ``engine.history``.

Progress events (:data:`PROGRESS_EVENTS`), many a step, for progress bars:

- ``"c_step_task"``: ``engine``, ``step`` (0 during direct compression), ``index`` (1-based),
  ``total``, ``task`` (the :class:`~lcdsl.plan.Task`), before that task's projection.

Notices (:data:`NOTICE_EVENTS`):

- ``"warning"``: ``engine``, ``step``, ``mu``, ``kind`` (``"divergence"``, ``"rolled-back"`` or
  ``"unstable"``), ``message``: also in ``engine.warnings`` and as a Python warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from lcdsl.errors import EngineError, did_you_mean

__all__ = ["EVENTS", "PROGRESS_EVENTS", "NOTICE_EVENTS", "EventBus", "StepRecord"]

EVENTS: tuple[str, ...] = (
    "direct_compression",
    "lc_step_start",
    "l_step_end",
    "c_step_end",
    "lc_step_end",
)
"""The names :class:`~lcdsl.engine.Engine` emits, in the order a run emits them."""

PROGRESS_EVENTS: tuple[str, ...] = ("c_step_task",)
"""Finer-grained names the engine also emits (per task of a C step), for progress displays."""

NOTICE_EVENTS: tuple[str, ...] = ("warning",)
"""What the engine emits when something needs a person's eye (a diverged step, an unstable ``lr·μ``)."""

Callback = Callable[..., Any]


class EventBus:
    """Callbacks by event name. Names outside ``names`` are refused, so a typo fails loudly."""

    def __init__(self, names: Iterable[str] = EVENTS + PROGRESS_EVENTS + NOTICE_EVENTS) -> None:
        self._callbacks: dict[str, list[Callback]] = {name: [] for name in names}

    def _list(self, name: str) -> list[Callback]:
        try:
            return self._callbacks[name]
        except KeyError:
            raise EngineError(
                f"unknown event '{name}'{did_you_mean(name, self._callbacks)} "
                f"(events: {', '.join(self._callbacks)})"
            ) from None

    def on(self, name: str, callback: Callback) -> Callback:
        """Call ``callback(**payload)`` on every ``emit(name, …)``, after earlier subscribers.

        Returns the callback, so it can be passed to :meth:`off` later.

        Raises:
            EngineError: ``name`` is not an event of this bus.
        """
        self._list(name).append(callback)
        return callback

    def off(self, name: str, callback: Callback) -> None:
        """Stop calling ``callback`` on ``name``; a callback not subscribed is ignored."""
        callbacks = self._list(name)
        if callback in callbacks:
            callbacks.remove(callback)

    def emit(self, name: str, **payload: Any) -> None:
        """Call every subscriber of ``name`` with ``payload``, in subscription order.

        Raises:
            EngineError: ``name`` is not an event of this bus.
        """
        for callback in list(self._list(name)):
            callback(**payload)


@attrs.frozen
class StepRecord:
    """What one LC step (or direct compression, step 0) measured."""

    step: int
    """LC steps completed when the record was made; 0 for direct compression."""
    mu: float
    """The step's μ (0 for direct compression)."""
    loss: float | None
    """What the L step returned (None if it returned nothing, and for direct compression)."""
    distortion: float
    """``Σ_tasks ‖w − Δ(θ)‖²`` after the C step."""
    metrics: dict[str, float] = attrs.field(factory=dict, hash=False)
    """What ``evaluate`` returned for the compressed model (``w = Δ(θ)``)."""
    bits: int | None = None
    """Bits of every task's ``θ``; None when an operator cannot tell."""
    params: int | None = None
    """Numbers stored in every task's ``θ``; None when an operator cannot tell."""
    seconds_l_step: float = 0.0
    """Wall time of the L step (including the penalty's)."""
    seconds_c_step: float = 0.0
    """Wall time of the C step and the multiplier step (of direct compression at step 0)."""
    seconds_penalty: float = 0.0
    """Wall time spent in :meth:`Engine.penalty` during the L step."""
    change: float | None = None
    """``Σ_tasks ‖Δ(θ) − Δ(θ) of the previous C step‖²``: how much the C step moved the
    compressed weights (None for direct compression)."""
    iterations: int | None = None
    """How often the L step took the penalty (:meth:`Engine.penalty` or
    :meth:`Engine.add_penalty_grad` calls: its optimizer iterations); None for direct compression."""
    held: bool = False
    """Whether the multiplier step was skipped (``λ`` kept): under ``auto``, an L step too
    weak to move ``w`` toward ``Δ(θ)`` (:func:`lcdsl.engine.schedule.holds_multipliers`)."""
    budgets: list[dict[str, Any]] = attrs.field(factory=list, hash=False)
    """Per ``within …`` budget of the plan, the C step's allocation: ``budget`` (as written),
    ``unit``, ``limit``, ``cost`` (the chosen options' total, ``≤ limit``), ``distortion``, and
    ``choices`` (task name → the chosen option's label, ``bits=3``) and ``costs`` (task name →
    the chosen option's cost, in ``unit``); empty without budgets."""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data (JSON-ready, and loadable with ``weights_only=True``)."""
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        """The record :meth:`to_dict` wrote."""
        budgets = [
            dict(b, choices=dict(b.get("choices", {})), costs=dict(b.get("costs", {}))) for b in data.get("budgets", [])
        ]
        return cls(**{**data, "metrics": dict(data.get("metrics", {})), "budgets": budgets})
