"""Drive the LC engine from someone else's training loop: Lightning, Hugging Face ``Trainer``.

A trainer owns the loop; the LC algorithm needs four things from it, at the right moments:

- **the penalty** ``μ/2 ‖w − Δ(θ) − λ/μ‖²`` in the loss: the callbacks add its gradient
  ``μ(w − Δ(θ)) − λ`` to ``w.grad`` just before each optimizer step (after gradient
  accumulation, AMP unscaling and the DDP all-reduce), so the user's loss stays as it is;
- **the C step and the multiplier step** at the end of each L step (a number of epochs, or of
  optimizer steps), then the next ``μ`` of the schedule;
- **the state** (``engine.state_dict()`` plus where the L step is) in the trainer's checkpoint;
- **a stop** once the μ schedule is done, and ``w ← Δ(θ)`` at the end.

:class:`LCDriver` holds that logic without knowing any trainer; ``lcdsl.integrations.lightning``
and ``lcdsl.integrations.hf`` are thin callbacks that call it from their hooks. Neither
framework is imported here, so this module works without the optional extras.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError
from lcdsl.formats import DRIVER_FORMAT

__all__ = ["LCDriver", "DriverCallback", "Unit"]

Unit = Literal["epoch", "step"]
"""What an L step's length counts: training epochs, or optimizer steps."""


class LCDriver:
    """The LC algorithm's schedule, driven by a trainer's hooks.

    Args:
        engine: the engine, built on the model the trainer trains (a DDP wrapper is fine).
        unit: what ``length`` counts: ``"epoch"`` (the trainer's epochs) or ``"step"``
            (optimizer steps).
        length: units per L step; None takes ``settings.epochs`` (only with ``unit="epoch"``).
        first_length: units of the first L step; None takes ``settings.first_epochs`` with
            ``unit="epoch"`` and ``length`` otherwise.
        evaluate: called under ``engine.compressed()`` after each C step; its metrics go into
            the step's :class:`~lcdsl.engine.events.StepRecord`.
        finalize: ``w ← Δ(θ)`` when training ends with the schedule done.
        reset_optimizer: clear the optimizers' state (momentum, Adam moments) at the start of
            every L step, as a fresh optimizer per LC step would.

    Raises:
        EngineError: a length is not a positive integer, or ``unit`` is unknown.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        unit: Unit = "epoch",
        length: int | None = None,
        first_length: int | None = None,
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
        finalize: bool = True,
        reset_optimizer: bool = True,
    ) -> None:
        if unit not in ("epoch", "step"):
            raise EngineError(f"unit must be 'epoch' or 'step', got {unit!r}")
        settings = engine.settings
        if first_length is None:
            # the spec's epochs/first_epochs when nothing is given; one length for every step otherwise
            first_length = settings.first_epochs if unit == "epoch" and length is None else length
        if length is None:
            if unit == "step":
                raise EngineError("unit='step' needs length=<optimizer steps per L step>")
            length = settings.epochs
        for name, value in (("length", length), ("first_length", first_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineError(f"{name} must be an integer ≥ 1, got {value!r}")
        self.engine = engine
        self.unit: Unit = unit
        self.length = length
        self.first_length = first_length
        self.evaluate = evaluate
        self.finalize = finalize
        self.reset_optimizer = reset_optimizer
        self.units_in_step = 0
        """Units of the current L step done so far (saved in checkpoints)."""
        self.units_seen = 0
        """Units ended since :meth:`begin` in this process (not saved)."""
        self.penalty_steps = 0
        """Optimizer steps that got the penalty's gradient since :meth:`begin` (not saved)."""
        self.begun = False
        self._last_loss: float | None = None  # the current L step's latest unit loss

    # ------------------------------------------------------------------ schedule

    def step_length(self, k: int) -> int:
        """Units of LC step ``k`` (0-based)."""
        return self.first_length if k == 0 else self.length

    @property
    def total_units(self) -> int:
        """Units the whole μ schedule needs, from the start: under ``mu = auto(…)`` the most it
        may need (every step of its budget, and its retries of rolled-back steps); it stops the
        trainer earlier once feasible."""
        retries = self.engine.settings.mu.retries * self.length if self.engine.adaptive else 0
        return sum(self.step_length(k) for k in range(self.engine.max_steps)) + retries

    @property
    def remaining_units(self) -> int:
        """Units still needed to finish the schedule from where the run is."""
        if self.done:
            return 0
        k = self.engine.step
        rest = sum(self.step_length(j) for j in range(k + 1, self.engine.max_steps))
        return self.step_length(k) - self.units_in_step + rest

    @property
    def done(self) -> bool:
        """Whether the μ schedule is over (every step ran, or the run converged)."""
        return self.engine.done

    def check_model(self, model: nn.Module) -> None:
        """Refuse a trainer model that does not hold the engine's parameters (the engine would
        compress a copy nobody trains).

        Raises:
            EngineError: some parameter of the plan is not one of ``model``'s.
        """
        trained = {id(p) for p in model.parameters()}
        missing = [p for p in self.engine.parameters if id(p) not in trained]
        if missing:
            raise EngineError(
                "the engine's parameters are not the trained model's: build the Engine on the model "
                "you give the trainer (after moving it to its device is fine; a copy is not)"
            )

    # --------------------------------------------------------------------- hooks

    def begin(self, optimizers: list[torch.optim.Optimizer] = ()) -> None:
        """At training start: direct compression if no C step happened yet, then the μ of the
        current L step. On a resumed run (state loaded) it only sets μ."""
        self.begun = True
        self.units_seen = 0
        self.penalty_steps = 0
        if self.engine.direct_step(self.evaluate) is not None:
            self.units_in_step = 0
        if not self.done:
            self._start_l_step(optimizers, announce=self.units_in_step == 0)

    def _start_l_step(self, optimizers: list[torch.optim.Optimizer], announce: bool) -> None:
        self._last_loss = None
        if announce and self.reset_optimizer:
            for optimizer in optimizers:
                getattr(optimizer, "optimizer", optimizer).state.clear()  # unwrap accelerate's
        self.engine.begin_step(self.engine.step, announce=announce)

    def add_penalty_grad(self) -> bool:
        """Add ``∇ penalty = μ(w − Δ(θ)) − λ`` to the task parameters' ``.grad``
        (:meth:`Engine.add_penalty_grad`).

        Call it right before the optimizer step, after the loss's gradient is complete.
        Returns whether it added anything (not while ``μ = 0`` or once the schedule is over).
        """
        if not self.begun or self.done or self.engine.mu == 0:
            return False
        self.engine.add_penalty_grad()
        self.penalty_steps += 1
        return True

    def unit_end(self, loss: float | None = None, optimizers: list[torch.optim.Optimizer] = ()) -> bool:
        """One epoch (or optimizer step) has ended. At the end of an L step: the C step, the
        multiplier step, the record, then the next μ.

        Args:
            loss: the trainer's training loss over the unit (the L step's record gets the last).
            optimizers: reset at the next L step's start if ``reset_optimizer``.

        Returns:
            True once the schedule is done: the trainer should stop.

        Raises:
            EngineError: the loss or the weights are not finite after the L step.
        """
        if not self.begun or self.done:
            return self.done
        self.units_seen += 1
        self.units_in_step += 1
        if loss is not None:
            self._last_loss = float(loss)
        engine = self.engine
        k = engine.step
        if self.units_in_step < self.step_length(k):
            return False
        engine.end_step(k, self._last_loss, self.evaluate)
        self.units_in_step = 0
        if not self.done:
            self._start_l_step(optimizers, announce=True)
        return self.done

    def end(self, hooks: dict[str, str] | None = None) -> None:
        """At training end: warn about hooks that never fired or a schedule left unfinished;
        ``w ← Δ(θ)`` if the schedule is done and ``finalize``.

        Args:
            hooks: the trainer's names for the two hooks (keys ``"unit"``, ``"penalty"``), for
                the warnings.
        """
        names = {"unit": f"the end of an {self.unit}", "penalty": "the pre-optimizer-step hook"}
        names.update(hooks or {})
        engine = self.engine
        if not self.begun:
            warnings.warn("lcdsl: training ended but the train-start hook never fired; no LC step ran", stacklevel=3)
            return
        if self.units_seen == 0 and not self.done:
            warnings.warn(
                f"lcdsl: {names['unit']} never fired during training, so no C step ran "
                f"(the schedule needs {self.remaining_units} more {self.unit}s)",
                stacklevel=3,
            )
        elif self.penalty_steps == 0 and self.units_seen > 0 and engine.max_steps:
            warnings.warn(
                f"lcdsl: {names['penalty']} never fired, so the LC penalty never reached the "
                "gradients (a manual optimizer step that bypasses the trainer?)",
                stacklevel=3,
            )
        if not self.done:
            warnings.warn(
                f"lcdsl: training ended after {engine.step} of {engine.max_steps} LC steps; "
                f"{self.remaining_units} more {self.unit}s finish the schedule (resume from a checkpoint, "
                f"or train for {self.total_units} {self.unit}s from the start); the weights are not Δ(θ) yet",
                stacklevel=3,
            )
            return
        if self.finalize:
            engine.finalize()

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The engine's state and where the current L step is (tensors and plain data)."""
        return {
            "format": DRIVER_FORMAT,
            "engine": self.engine.state_dict(),
            "unit": self.unit,
            "units_in_step": self.units_in_step,
            "last_loss": self._last_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved.

        Raises:
            EngineError: the state is not a driver state, counts another unit, or its engine
                state does not fit this plan.
        """
        if not isinstance(state, dict) or state.get("format") != DRIVER_FORMAT:
            raise EngineError("not an lcdsl trainer-callback state (was it saved by another version?)")
        if state["unit"] != self.unit:
            raise EngineError(f"the checkpoint counts L steps in {state['unit']}s, this callback in {self.unit}s")
        self.engine.load_state_dict(state["engine"])
        self.units_in_step = int(state["units_in_step"])
        last = state.get("last_loss")
        self._last_loss = None if last is None else float(last)


class DriverCallback:
    """What the trainer callbacks share: an :class:`LCDriver` built from the same keywords (see
    there), and the :attr:`engine` and :attr:`total_epochs` a user reads off the callback."""

    def __init__(
        self,
        engine: Engine,
        *,
        unit: Unit = "epoch",
        length: int | None = None,
        first_length: int | None = None,
        evaluate: Callable[[Engine], dict[str, float]] | None = None,
        finalize: bool = True,
        reset_optimizer: bool = True,
    ) -> None:
        super().__init__()  # the trainer's own callback base comes next in the MRO
        self.driver = LCDriver(
            engine, unit=unit, length=length, first_length=first_length,
            evaluate=evaluate, finalize=finalize, reset_optimizer=reset_optimizer,
        )  # fmt: skip

    @property
    def engine(self) -> Engine:
        """The engine this callback drives."""
        return self.driver.engine

    @property
    def total_epochs(self) -> int:
        """Units (training epochs with ``unit="epoch"``) the whole schedule needs from the
        start: ``max_epochs`` / ``num_train_epochs`` for a fresh run."""
        return self.driver.total_units
