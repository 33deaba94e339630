"""The engine's state as plain data: what a checkpoint saves, and the check that it fits a plan.

:class:`EngineState` is a part of :class:`~lcdsl.engine.Engine`; it reads the engine's tasks and
writes them back, and knows nothing of files (:mod:`lcdsl.store` writes them).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any

import torch

from lcdsl.engine.events import StepRecord
from lcdsl.errors import EngineError
from lcdsl.formats import STATE_FORMAT
from lcdsl.operators.base import Operator, check_saved_theta, describe
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.settings import settings_data
from lcdsl.plugins.origin import operator_plugin, plugin_versions

__all__ = ["STATE_FORMAT", "plan_fingerprint", "operator_text", "EngineState"]


def operator_text(op: Operator) -> str:
    """An operator as a saved state names it: its spec text and its plugin, ``quant(k=2) from builtin``."""
    return f"{describe(op)} from {operator_plugin(op)}"


def plan_fingerprint(plan: Plan) -> str:
    """The sha256 of a plan's canonical text: task names, views, layouts, shapes, operators, settings.

    Operators are their spec text and plugin (:func:`operator_text`), settings their plain data
    (:func:`~lcdsl.plan.settings.settings_data`), so the fingerprint does not depend on how a
    class prints itself. Two plans with the same fingerprint compress the same tensors the same
    way, so a saved engine state of one can resume the other."""
    lines = [
        f"task {task.name} joint={task.joint} shapes={task.shapes} view={task.operator.view} "
        f"operator={operator_text(task.operator)}"
        # a layout other than outputs-first changes what rows are (a plan without one prints as before)
        + (f" layout=({task.layout.outputs}, {task.layout.inputs})" if task.layout is not None else "")
        for task in plan.tasks
    ]
    lines.extend(  # budgets change which options the C steps choose (a plan without any prints as before)
        f"budget tasks={list(b.tasks)} limit={b.limit} unit={b.unit} costs={[list(c) for c in b.costs]}"
        for b in plan.budgets
    )
    lines.append("settings " + json.dumps(settings_data(plan.settings), sort_keys=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


_IDENTITY = ("task", "operator", "plugin")
"""The keys of a saved task entry that must match for a state to be loaded."""


def _task_entry(task: Task) -> dict[str, str]:
    """A task as a saved state records it: its name, operator (spec text) and plugin, which must
    match, and how the operator prints itself (``repr``), which is shown in messages only."""
    op = task.operator
    return {"task": task.name, "operator": describe(op), "plugin": operator_plugin(op), "shown": repr(op)}


def _identity(entry: Any) -> tuple[Any, ...]:
    return tuple(entry.get(key) for key in _IDENTITY) if isinstance(entry, dict) else (entry,)


def _entry_text(entry: Any) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    return f"{entry.get('task')}: {entry.get('operator')} from {entry.get('plugin')} [{entry.get('shown')}]"


def _settings_difference(saved: Any, ours: dict[str, Any]) -> str:
    """The settings that differ, as ``name: checkpoint …, now …``."""
    if not isinstance(saved, dict):
        return f"checkpoint: {saved!r}"
    names = [name for name in {**saved, **ours} if saved.get(name) != ours.get(name)]
    return "; ".join(f"{name}: checkpoint {saved.get(name)!r}, now {ours.get(name)!r}" for name in names)


class EngineState:
    """:meth:`state_dict` and :meth:`load_state_dict` of :class:`~lcdsl.engine.Engine`."""

    def _load_schedule_state(self, state: dict[str, Any]) -> None:
        """``auto``'s μ so far and what its next decision needs; the run's warnings."""
        schedule = state.get("schedule", {})
        mus = state.get("mus", [])
        ok = isinstance(schedule, dict) and isinstance(mus, list)
        ok = ok and all(isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) for m in mus)
        numbers = {key: schedule.get(key, 0) for key in ("weight_norm2", "backoff", "retries_used")} if ok else {}
        if not ok or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise EngineError("cannot resume: engine.schedule or engine.mus is malformed")
        if self.adaptive:
            self.mus = tuple(float(m) for m in mus)
        self._weight_norm2 = float(numbers["weight_norm2"])
        self._backoff, self._retries_used = int(numbers["backoff"]), int(numbers["retries_used"])
        found = state.get("warnings", [])
        self.warnings = [dict(w) for w in found] if isinstance(found, list) and all(isinstance(w, dict) for w in found) else []

    def _task_entries(self) -> list[dict[str, str]]:
        """Each task's name, operator and plugin: what a saved state must match to be loaded."""
        return [_task_entry(s.task) for s in self._tasks]

    def state_dict(self, *, shards: bool = False) -> dict[str, Any]:
        """The whole LC state as tensors and plain data (``torch.save`` /
        ``torch.load(weights_only=True)``). The model's weights and the optimizer are not in it:
        save them beside it.

        A sharded (FSDP) task's ``λ`` is all-gathered into its whole view (a collective: call it
        on every rank), so the state is the same as one process's. With ``shards=True`` every
        task's ``λ`` is instead a list of one tensor a parameter (a ``DTensor`` for a sharded
        task: no communication), what a sharded checkpoint (:mod:`lcdsl.store.sharded`) saves;
        ``load_state_dict`` takes either form, whichever way the tasks are sharded now."""
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "tasks": self._task_entries(),
            "settings": settings_data(self.settings),
            "plugin_versions": plugin_versions(),
            "mus": list(self.mus),
            "penalty": self.settings.penalty,
            "step": self.step,
            "mu": self._mu,
            "converged": self.converged,
            # what auto's next μ is decided from besides the history: a resumed run decides the same
            "schedule": {
                "weight_norm2": self._weight_norm2, "backoff": self._backoff, "retries_used": self._retries_used,
            },
            "warnings": [dict(w) for w in self.warnings],
            "lambdas": {s.task.name: self._saved_lambda(s, shards) for s in self._tasks if s.lam is not None},
            "thetas": {
                name: {k: v.detach().clone() for k, v in theta.items()} for name, theta in self.thetas.items()
            },
            "history": [r.to_dict() for r in self.history],
        }

    def _saved_lambda(self, s: Any, shards: bool) -> torch.Tensor | list[torch.Tensor]:
        """A task's ``λ`` as :meth:`state_dict` saves it: the whole view-shaped tensor, or with
        ``shards`` one tensor a parameter (a DTensor for a sharded task)."""
        if not shards:
            return s.tensors.full(s.lam).detach().clone()
        pieces = s.tensors.pieces(s.lam) if s.tensors.sharded else s.view.split(s.lam)
        return [piece.detach().clone() for piece in pieces]

    def _loaded_lambda(self, s: Any, lam: Any) -> torch.Tensor:
        """A saved ``λ`` (the whole view, or one tensor a parameter) in the task's state layout."""
        name = s.task.name
        if isinstance(lam, (list, tuple)):
            try:
                if s.tensors.sharded:
                    return s.tensors.from_pieces(lam)
                shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in lam]
                if shapes != [tuple(shape) for shape in s.view.shapes]:
                    raise ValueError(f"pieces of shapes {shapes}, expected {list(s.view.shapes)}")
                return s.view.gather(lam).clone()
            except ValueError as exc:
                raise EngineError(f"cannot resume: engine.lambdas['{name}']: {exc}") from None
        if not isinstance(lam, torch.Tensor) or tuple(lam.shape) != s.view.shape:
            found = f"shape {tuple(lam.shape)}" if isinstance(lam, torch.Tensor) else type(lam).__name__
            raise EngineError(f"cannot resume: engine.lambdas['{name}'] has {found}, expected shape {s.view.shape}")
        return s.tensors.shard(lam)

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            why = " (format 1 named operators by repr and cannot be checked against this plan)" if found == 1 else ""
            raise EngineError(f"not an lcdsl engine state of format {STATE_FORMAT} (found {found!r}){why}")
        if state.get("fingerprint") == self.fingerprint:
            return
        ours = self._task_entries()
        theirs = list(state.get("tasks", []))
        our_ids, their_ids = [_identity(t) for t in ours], [_identity(t) for t in theirs]
        if their_ids != our_ids:
            missing = [_entry_text(t) for t in theirs if _identity(t) not in our_ids]
            extra = [_entry_text(t) for t in ours if _identity(t) not in their_ids]
            detail = "; ".join(
                part
                for part in (
                    f"only in the checkpoint: {', '.join(missing)}" if missing else "",
                    f"only in this plan: {', '.join(extra)}" if extra else "",
                )
                if part
            ) or "the tasks are in another order"
            raise EngineError(f"cannot resume: the checkpoint was made for other tasks ({detail})")
        ours_settings = settings_data(self.settings)
        if state.get("settings") != ours_settings:
            raise EngineError(
                "cannot resume: the checkpoint was made with other settings "
                f"({_settings_difference(state.get('settings'), ours_settings)})"
            )
        raise EngineError("cannot resume: the checkpoint was made for another plan (fingerprint differs)")

    def _checked_scalars(self, state: dict[str, Any], thetas: Any, lambdas: Any) -> tuple[int, float]:
        """``step`` (in ``[0, len(mus)]``) and ``mu`` (finite, ≥ 0) of a saved state, and that
        ``thetas``/``lambdas`` are dicts; ``EngineError`` naming the key otherwise."""
        for key, value in (("thetas", thetas), ("lambdas", lambdas)):
            if not isinstance(value, dict):
                raise EngineError(f"cannot resume: engine.{key} is {type(value).__name__}, expected a dict")
        step, mu = state.get("step"), state.get("mu")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= self.max_steps:
            raise EngineError(f"cannot resume: engine.step is {step!r}, expected an integer in [0, {self.max_steps}]")
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not (math.isfinite(mu) and mu >= 0):
            raise EngineError(f"cannot resume: engine.mu is {mu!r}, expected a finite number ≥ 0")
        history = state.get("history", [])
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise EngineError("cannot resume: engine.history is not a list of records")
        return step, float(mu)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (tensors move to the parameters' device).

        Raises:
            EngineError: the state is for another plan (other tasks, operators, shapes or
                settings), or is malformed.
        """
        self._check_compatible(state)
        saved_versions = state.get("plugin_versions", {})
        if saved_versions != plugin_versions():
            warnings.warn(
                f"resuming with other plugin versions (checkpoint: {saved_versions}, now: {plugin_versions()})",
                stacklevel=2,
            )
        thetas, lambdas = state.get("thetas", {}), state.get("lambdas", {})
        step, mu = self._checked_scalars(state, thetas, lambdas)
        for s in self._tasks:
            name = s.task.name
            if (name in thetas) != (name in lambdas) or (thetas and name not in thetas):
                raise EngineError(f"cannot resume: the checkpoint's state of task {name} is incomplete")
        with torch.no_grad():
            for s in self._tasks:
                name = s.task.name
                if name not in thetas:
                    s.set_theta(None)
                    s.lam = None
                    continue
                device = s.tensors.local_params(s.params)[0].device
                lam = self._loaded_lambda(s, lambdas[name])
                if not lam.is_floating_point() or not bool(torch.isfinite(lam).all()):
                    raise EngineError(f"cannot resume: engine.lambdas['{name}'] is not finite floating-point numbers")
                try:
                    check_saved_theta(s.task.operator, thetas[name], s.view.shape)
                except ValueError as exc:
                    raise EngineError(f"cannot resume: engine.thetas['{name}']: {exc}") from None
                s.set_theta({k: v.to(device) for k, v in thetas[name].items()})  # Δ(θ) made if kept
                s.set_lambda(lam)  # in the lambda_dtype setting's dtype
        self.thetas = {s.task.name: s.theta for s in self._tasks if s.theta is not None}
        self.step = step
        self._mu = mu
        self.converged = bool(state.get("converged", False))
        self._load_schedule_state(state)
        try:
            self.history = [StepRecord.from_dict(r) for r in state.get("history", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"cannot resume: engine.history has a malformed record ({exc!r})") from None
        self._targets = self._param_views = None
