"""The LC loop: direct compression, then L step, C step and multiplier step along the μ schedule.

:class:`EngineLoop` is a part of :class:`~lcdsl.engine.Engine`: the start- and end-of-step
sequences that :meth:`~EngineLoop.run`, a trainer's own loop and the trainer callbacks
(:mod:`lcdsl.engine.driver`) share. They hold every decision of the schedule: which μ a step gets
(``auto``'s from the records so far, :mod:`lcdsl.engine.schedule`), whether a step diverged (a
warning; under ``auto`` the step is rolled back and retried) and whether the run is feasible.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from lcdsl.engine import schedule as rules
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
        """Step 0 if the run has no record of it yet: direct compression and its record (event
        ``direct_compression``). Returns the record, or None on a started or resumed run. A bare
        :meth:`direct_compression` call made before leaves no record (and ``auto`` needs one), so
        direct compression is made again here, from the same weights to the same ``θ``.

        Raises:
            EngineError: the weights to compress are not finite.
        """
        if not self._tasks or (self.thetas and (self.history or self.step > 0)):
            return None
        self._check_finite(-1, None)
        start = time.perf_counter()
        with torch.no_grad():
            self._weight_norm2 = float(sum(p.detach().double().pow(2).sum() for p in self.parameters))
        self.direct_compression()
        seconds = time.perf_counter() - start
        bits, params = self._total_storage()
        record = StepRecord(
            0, 0.0, None, self.distortion(), self._evaluate(evaluate), bits, params, seconds_c_step=seconds,
            budgets=self._budgets.record(),
        )
        self.history.append(record)
        self.events.emit("direct_compression", engine=self, record=record)
        return record

    # ------------------------------------------------------------ the schedule

    @property
    def distortion_scale(self) -> float:
        """What distortions are measured against: direct compression's ``‖w − Δ(θ)‖²``
        (at least ``1e-4 · ‖w‖²``, :func:`~lcdsl.engine.schedule.distortion_scale`); with a penalty
        form, the distortion after its first released step
        (:func:`~lcdsl.engine.schedule.penalty_distortion_scale`); 0 before direct compression."""
        if not self.history:
            return 0.0
        if self._penalty_forms:  # any schedule: a penalty form's D₀ at μ → 0⁺ is ‖w‖²
            return rules.penalty_distortion_scale(self.history, self._weight_norm2)
        return rules.distortion_scale(self.history[0].distortion, self._weight_norm2)

    @property
    def feasible_below(self) -> float:
        """The distortion at or below which the run counts as feasible (``tolerance · D₀``)."""
        mu = self.settings.mu
        tolerance = mu.tolerance if self.adaptive else rules.DEFAULT_TOLERANCE
        return tolerance * self.distortion_scale

    @property
    def _penalty_forms(self) -> bool:
        """Whether a task's operator is a penalty form (it decides its own size)."""
        return any(s.task.operator.penalty_form for s in self._tasks)

    @property
    def _hold_share(self) -> float:
        """The pull below which ``auto`` holds ``λ`` (:func:`~lcdsl.engine.schedule.hold_share`)."""
        return rules.hold_share(self._penalty_forms)

    def next_mu(self, k: int) -> float:
        """The μ of LC step ``k + 1`` (``k`` 0-based): ``mus[k]`` of a fixed schedule; under
        ``auto``, the rule's choice from the records so far (:func:`~lcdsl.engine.schedule.auto_mu`)."""
        if not self.adaptive:
            return self.mus[k]
        if not self.history:
            raise EngineError("the μ of an auto schedule needs direct compression first: call direct_step()")
        return rules.auto_mu(
            self.settings.mu, self.history, scale=self.distortion_scale, backoff=self._backoff,
            cap=rules.mu_cap(self.settings, k),
            release=rules.release_mu(
                self.settings, k, rules.next_iterations(self.settings, k, self.history[-1].iterations), self._hold_share
            ),
        )  # fmt: skip

    def _warn(self, step: int, mu: float, kind: str, message: str) -> None:
        """A warning of the run: kept in :attr:`warnings`, emitted as event ``warning`` and as a
        Python warning."""
        self.warnings.append({"step": step, "mu": mu, "kind": kind, "message": message})
        self.events.emit("warning", engine=self, step=step, mu=mu, kind=kind, message=message)
        warnings.warn(f"lcdsl: {message}", stacklevel=3)

    def _take_snapshot(self) -> None:
        """What a rolled-back step goes back to: the model's parameters and buffers, θ, Δ(θ), λ.

        The copies of the weights and of λ are made in host memory (an accelerator's memory is
        what a large model runs short of; a step is copied once, not per batch). θ and Δ(θ) are
        kept by reference: a C step replaces them, it never writes into them."""
        with torch.no_grad():
            model = {k: _host_copy(v) for k, v in unwrap(self.model).state_dict().items()}
            tasks = [(s.theta, s.delta, None if s.lam is None else _host_copy(s.lam)) for s in self._tasks]
        self._snapshot = {"model": model, "tasks": tasks, "thetas": dict(self.thetas)}

    def _roll_back(self) -> None:
        snapshot: dict[str, Any] = self._snapshot
        with torch.no_grad():
            unwrap(self.model).load_state_dict(snapshot["model"])
        for state, (theta, delta, lam) in zip(self._tasks, snapshot["tasks"]):
            state.theta, state.delta = theta, delta
            state.lam = None if lam is None else lam.to(state.device)
        self.thetas = dict(snapshot["thetas"])
        self._targets = self._param_views = None
        self.mu = self._mu_before_step

    # -------------------------------------------------------------- the steps

    def begin_step(self, k: int | None = None, *, announce: bool = True) -> None:
        """Start LC step ``k + 1`` (``k`` indexes :attr:`mus`; default :attr:`step`, the next one):
        ``μ ← next_mu(k)``, the step's and the penalty's clocks reset, and event ``lc_step_start``
        unless ``announce`` is False (a run resumed inside the step). Warns when ``lr·μ`` is past
        the optimizer's stable limit. Under ``auto`` it keeps what a rollback needs.
        """
        k = self.step if k is None else k
        self._mu_before_step = self._mu  # what a failed step puts back
        mu = self.next_mu(k)
        if self.adaptive:
            self.mus = self.mus[:k] + (mu,)
            if self._retries_used < self.settings.mu.retries:
                self._take_snapshot()
        self.mu = mu
        self._penalty_seconds = 0.0
        self._penalty_calls = 0
        self._step_started = time.perf_counter()
        if announce:
            unstable = rules.unstable(self.settings, k, mu)
            if unstable is not None and not self.adaptive:
                self._warn(k + 1, mu, "unstable", unstable)
            self.events.emit("lc_step_start", engine=self, step=k + 1, mu=mu)

    def end_step(
        self,
        k: int | None = None,
        loss: float | None = None,
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
    ) -> StepRecord:
        """End LC step ``k + 1`` (default: the one :meth:`begin_step` started) after its L step:
        the finiteness check, the C step, the multiplier step, the record (with ``evaluate``'s
        metrics of the compressed model), the divergence check and the convergence test, with
        events ``l_step_end``, ``c_step_end``, ``lc_step_end``.

        A step whose L-step loss or distortion jumped (:func:`~lcdsl.engine.schedule.divergence`)
        is warned about; under ``auto``, with retries left, it is rolled back instead: the model,
        θ, λ and μ are as before the step, :attr:`step` stays, event ``lc_step_end`` does not
        come, and the next :meth:`begin_step` retries it with a smaller μ. The returned record
        is then the rolled-back attempt's, not in :attr:`history`.

        Raises:
            EngineError: the L step left a non-finite loss or weights; the engine's state is as
                before the step (μ included).
        """
        k = self.step if k is None else k
        seconds_l = time.perf_counter() - self._step_started
        mu = self.mus[k]
        try:
            self._check_finite(k, loss)
        except EngineError:
            self.mu = self._mu_before_step
            raise
        self.events.emit("l_step_end", engine=self, step=k + 1, mu=mu, loss=loss)
        start = time.perf_counter()
        iterations = self._penalty_calls
        held = self.adaptive and rules.holds_multipliers(self.settings, k, mu, iterations, self._hold_share)
        self.c_step()
        if not held:
            self.multiplier_step()
        seconds_c = time.perf_counter() - start
        self.events.emit("c_step_end", engine=self, step=k + 1, mu=mu)
        distortion = self.distortion()
        bits, params = self._total_storage()
        record = StepRecord(
            k + 1, mu, loss, distortion, self._evaluate(evaluate), bits, params,
            seconds_l, seconds_c, self._penalty_seconds, self._last_change, iterations, held,
            budgets=self._budgets.record(),
        )  # fmt: skip
        previous = self.history[-1] if self.history else None
        earlier = self.history[-2] if len(self.history) > 1 else None
        diverged = rules.divergence(record, previous, target=self.feasible_below, earlier=earlier)
        if diverged is not None:
            if self.adaptive and self._snapshot is not None and self._retries_used < self.settings.mu.retries:
                self._roll_back()
                self._backoff += 1
                self._retries_used += 1
                self._snapshot = None
                self._warn(k + 1, mu, "rolled-back", f"LC step {k + 1}: {diverged}; rolled back, retrying with a smaller μ")
                return record
            self._warn(k + 1, mu, "divergence", f"LC step {k + 1}: {diverged}")
        self._snapshot = None
        self._backoff = 0
        self.step = k + 1
        self.history.append(record)
        if self.settings.tolerance > 0 and math.sqrt(distortion) < self.settings.tolerance:
            self.converged = True
        if self.adaptive and rules.feasible(record, self.feasible_below) and rules.settled(record, previous):
            self.converged = True
        self.events.emit("lc_step_end", engine=self, record=record)
        return record

    def convergence(self) -> rules.Convergence | None:
        """How the run stands against ``w = Δ(θ)`` (its last record against ``tolerance · D₀``);
        None before the first LC step."""
        return rules.convergence(self.history, self.settings.mu, self.distortion_scale)

    def run(
        self,
        l_step: Callable[[Engine, int], float | None],
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
    ) -> list[StepRecord]:
        """Run (or resume) the LC algorithm along the μ schedule.

        :meth:`direct_step` first; then, until :attr:`done`, :meth:`begin_step`,
        ``l_step(engine, k)`` (``k`` indexes :attr:`mus`; train on your loss with the penalty's
        gradient, :meth:`add_penalty_grad`; return the loss or None) and :meth:`end_step`. Stops
        early once ``‖w − Δ(θ)‖ < settings.tolerance``, or, under ``auto``, once feasible. A step
        rolled back under ``auto`` runs again with a smaller μ. Does not finalize.

        Returns:
            Every record of the run so far (also in :attr:`history`).

        Raises:
            EngineError: the L step left a non-finite loss or weights (the engine's state is
                as before that step).
        """
        self.direct_step(evaluate)
        while not self.done:
            k = self.step
            self.begin_step(k)
            loss = l_step(self, k)
            if isinstance(loss, torch.Tensor):
                loss = loss.detach().item()
            self.end_step(k, None if loss is None else float(loss), evaluate)
        return list(self.history)


def _host_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in host memory (a sharded ``DTensor`` is copied where it is, on its mesh)."""
    t = t.detach()
    if is_sharded(t) or t.device.type == "cpu":
        return t.clone()
    return t.to("cpu", copy=True)
