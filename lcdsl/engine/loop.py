"""The LC loop: direct compression, then L step, C step and multiplier step along the μ schedule.

:class:`EngineLoop` is a part of :class:`~lcdsl.engine.Engine`: the end-of-step sequence that
:meth:`~EngineLoop.run` and the trainer callbacks (:mod:`lcdsl.engine.driver`) share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lcdsl.engine.events import StepRecord
from lcdsl.engine.shards import is_sharded, local_of, sum_over_ranks
from lcdsl.errors import EngineError
from lcdsl.plan.names import unwrap

if TYPE_CHECKING:
    from lcdsl.engine.core import Engine

__all__ = ["EngineLoop"]


class EngineLoop:
    """:meth:`run` and the steps it is made of, for :class:`~lcdsl.engine.Engine`."""

    def _check_finite(self, k: int, loss: float | None) -> None:
        where = f"LC step {k + 1} (μ={self.mus[k]:.4g})" if k >= 0 else "direct compression"
        if loss is not None and not math.isfinite(loss):
            raise EngineError(f"{where}: the L step's loss is {loss}; lower the learning rate or μ")
        with torch.no_grad():
            named = list(unwrap(self.model).named_parameters())
            finite = [torch.isfinite(local_of(p)).all() for _, p in named]  # a shard: this rank's numbers
            everywhere = bool(torch.stack([f.to(finite[0].device) for f in finite]).all()) if named else True
            if any(is_sharded(p) for _, p in named):  # every rank must stop together, or none
                everywhere = bool(sum_over_ranks(torch.tensor(float(not everywhere))) == 0)
            if everywhere:
                return  # one device sync when all is well
            for (name, _), ok in zip(named, finite):
                if not bool(ok):
                    raise EngineError(
                        f"{where}: parameter '{name}' has non-finite values; "
                        "lower the learning rate or μ"
                    )
            raise EngineError(f"{where}: another rank's shards have non-finite values; lower the learning rate or μ")

    def _evaluate(self, evaluate: Callable[[Engine], dict[str, float]] | None) -> dict[str, float]:
        if evaluate is None:
            return {}
        with self.compressed():
            metrics = evaluate(self)
        return {str(k): float(v) for k, v in (metrics or {}).items()}

    def direct_step(self, evaluate: Callable[[Engine], dict[str, float]] | None = None) -> StepRecord | None:
        """Step 0 if no C step has happened yet: direct compression and its record (event
        ``direct_compression``). Returns the record, or None on a started or resumed run.

        Raises:
            EngineError: the weights to compress are not finite.
        """
        if self.thetas or not self._tasks:
            return None
        self._check_finite(-1, None)
        start = time.perf_counter()
        self.direct_compression()
        seconds = time.perf_counter() - start
        bits, params = self._total_storage()
        record = StepRecord(
            0, 0.0, None, self.distortion(), self._evaluate(evaluate), bits, params, seconds_c_step=seconds
        )
        self.history.append(record)
        self.events.emit("direct_compression", engine=self, record=record)
        return record

    def begin_step(self, k: int, *, announce: bool = True) -> None:
        """Start LC step ``k + 1`` (``k`` indexes :attr:`mus`): ``μ ← mus[k]``, the step's and
        the penalty's clocks reset, and event ``lc_step_start`` unless ``announce`` is False (a run resumed
        inside the step)."""
        self._mu_before_step = self._mu  # what a failed step puts back
        self.mu = self.mus[k]
        self._penalty_seconds = 0.0
        self._step_started = time.perf_counter()
        if announce:
            self.events.emit("lc_step_start", engine=self, step=k + 1, mu=self.mus[k])

    def end_step(
        self,
        k: int,
        loss: float | None,
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
    ) -> StepRecord:
        """End LC step ``k + 1`` after its L step (begun with :meth:`begin_step`, whose clock
        times it): the finiteness check, the C step, the
        multiplier step, the record (with ``evaluate``'s metrics of the compressed model) and
        the convergence test, with events ``l_step_end``, ``c_step_end``, ``lc_step_end``.

        Raises:
            EngineError: the L step left a non-finite loss or weights; the engine's state is as
                before the step (μ included).
        """
        seconds_l = time.perf_counter() - self._step_started
        mu = self.mus[k]
        try:
            self._check_finite(k, loss)
        except EngineError:
            self.mu = self._mu_before_step
            raise
        self.events.emit("l_step_end", engine=self, step=k + 1, mu=mu, loss=loss)
        start = time.perf_counter()
        self.c_step()
        self.multiplier_step()
        seconds_c = time.perf_counter() - start
        self.events.emit("c_step_end", engine=self, step=k + 1, mu=mu)
        self.step = k + 1
        distortion = self.distortion()
        bits, params = self._total_storage()
        record = StepRecord(
            self.step, mu, loss, distortion, self._evaluate(evaluate), bits, params,
            seconds_l, seconds_c, self._penalty_seconds,
        )  # fmt: skip
        self.history.append(record)
        if self.settings.tolerance > 0 and math.sqrt(distortion) < self.settings.tolerance:
            self.converged = True
        self.events.emit("lc_step_end", engine=self, record=record)
        return record

    def run(
        self,
        l_step: Callable[[Engine, int], float | None],
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
    ) -> list[StepRecord]:
        """Run (or resume) the LC algorithm along the μ schedule.

        :meth:`direct_step` first; then, for each remaining μ, :meth:`begin_step`,
        ``l_step(engine, k)`` (``k`` indexes :attr:`mus`; train on your loss with the penalty's
        gradient, :meth:`add_penalty_grad`; return the loss or None) and :meth:`end_step`. Stops
        early once ``‖w − Δ(θ)‖ < settings.tolerance``. Does not finalize.

        Returns:
            Every record of the run so far (also in :attr:`history`).

        Raises:
            EngineError: the L step left a non-finite loss or weights (the engine's state is
                as before that step).
        """
        self.direct_step(evaluate)
        for k in range(self.step, len(self.mus)):
            if self.converged:
                break
            self.begin_step(k)
            loss = l_step(self, k)
            if isinstance(loss, torch.Tensor):
                loss = loss.detach().item()
            self.end_step(k, None if loss is None else float(loss), evaluate)
        return list(self.history)
