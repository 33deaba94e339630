"""The LC engine: the Learning-Compression algorithm's pieces, for any trainer to drive.

The engine keeps, per task of a :class:`~lcdsl.plan.Plan`: ``Δ(θ)`` and ``λ`` as tensors of the
task's view, and ``θ``. The weights ``w`` are never copied: each use builds the view from the
model's live parameters. Everything stays on the parameters' device.

The pieces (see ``docs/engine.md`` for a training loop that uses them):

- :meth:`Engine.direct_compression`: ``θ = Π(w)``, ``λ = 0`` (step 0, ``μ = 0``);
- :meth:`Engine.penalty`: ``Σ μ/2 ‖w − Δ(θ) − λ/μ‖²``, a differentiable scalar to add to the loss;
- :meth:`Engine.c_step`: ``θ ← Π(w − λ/μ)``;
- :meth:`Engine.multiplier_step`: ``λ ← λ − μ (w − Δ(θ))``;
- :meth:`Engine.finalize`: ``w ← Δ(θ)``;

and :meth:`Engine.run` drives them along the μ schedule.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import torch
from torch import nn

from lcdsl.checkpoint import fault_point
from lcdsl.errors import EngineError, LcdslError, PluginError, did_you_mean
from lcdsl.events import EventBus, StepRecord
from lcdsl.operators.base import Operator, Storage, Theta
from lcdsl.plan import Plan, Task, parameters_by_name, split_view, strip_ddp_prefix
from lcdsl.settings import Settings

__all__ = ["Engine", "StepRecord", "plan_fingerprint", "plugin_versions", "operator_origin", "STATE_FORMAT"]

STATE_FORMAT = 1
"""Version of the :meth:`Engine.state_dict` layout."""


def plan_fingerprint(plan: Plan) -> str:
    """The sha256 of a plan's canonical text: task names, views, shapes, operators, settings.

    Two plans with the same fingerprint compress the same tensors the same way, so a saved
    engine state of one can resume the other."""
    lines = [
        f"task {task.name} joint={task.joint} shapes={task.shapes} operator={task.operator!r}"
        for task in plan.tasks
    ]
    lines.append(f"settings {plan.settings!r}")
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def plugin_versions() -> dict[str, str]:
    """Installed plugin distributions and their versions, or ``{}`` without a registry."""
    try:
        from lcdsl.registry import default_registry
    except ModuleNotFoundError as exc:
        if exc.name != "lcdsl.registry":
            raise
        return {}
    return {str(k): str(v) for k, v in default_registry().versions().items()}


@attrs.define
class _TaskState:
    """A task, its live parameters, and its engine state (all tensors in the task's view)."""

    task: Task
    params: list[nn.Parameter]
    view: str
    shape: tuple[int, ...]
    theta: Theta | None = None
    delta: torch.Tensor | None = None  # Δ(θ), shape = view shape, no grad
    lam: torch.Tensor | None = None  # λ, shape = view shape


def operator_origin(op: Operator) -> str:
    """Where an operator comes from, for messages: ``plugin 'builtin' (lcdsl 0.1.0)``.

    An additive combination names each term's plugin."""
    try:
        from lcdsl.registry import default_registry

        registry = default_registry()
    except Exception:  # a broken plugin set must not hide the error being reported
        registry = None
    terms = getattr(op, "terms", None) or (op,)
    parts = []
    for term in terms:
        name = getattr(term, "name", type(term).__name__)
        label = "an unknown plugin"
        if registry is not None and registry.operators.get(name) is type(term):
            label = f"plugin {registry.provider(name).label()}"
        parts.append(f"'{name}' from {label}" if len(terms) > 1 else label)
    return ", ".join(parts)


def _checked_projection(state: _TaskState, target: torch.Tensor, mu: float) -> tuple[Theta, torch.Tensor]:
    """``θ = Π(target)`` and ``Δ(θ)``, refusing what breaks the operator contract.

    Raises:
        PluginError: the operator raised, or returned a θ that is not named tensors, or a
            ``Δ(θ)`` of another shape, dtype or device than ``target``, or non-finite values;
            the message names the operator and its plugin.
        EngineError: the target itself is not finite (the weights diverged).
    """
    op, task = state.task.operator, state.task.name

    def blame(what: str) -> PluginError:
        name = getattr(op, "name", type(op).__name__)
        return PluginError(f"operator {name} {what} (from {operator_origin(op)})")

    try:
        theta = op.project(target, mu=mu, warm=state.theta)
        if not isinstance(theta, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in theta.items()
        ):
            raise blame(f"returned a θ of type {type(theta).__name__} for task {task}, not a dict of named tensors")
        delta = op.decompress(theta, state.shape)
    except LcdslError:
        raise
    except Exception as exc:  # a plugin may raise anything; report it with its name
        raise blame(f"raised {type(exc).__name__} on task {task}: {exc}") from exc
    if not isinstance(delta, torch.Tensor):
        raise blame(f"decompressed task {task} to a {type(delta).__name__}, not a tensor")
    delta = delta.detach()
    if tuple(delta.shape) != state.shape:
        raise blame(f"decompressed task {task} to shape {tuple(delta.shape)}, expected {state.shape}")
    if delta.dtype != target.dtype or delta.device != target.device:
        raise blame(
            f"decompressed task {task} to {delta.dtype} on {delta.device}, expected {target.dtype} on {target.device}"
        )
    floats = [delta] + [v for v in theta.values() if v.is_floating_point()]
    flags = torch.stack([torch.isfinite(t).all().to(delta.device) for t in floats])  # one sync below
    if not bool(flags.all()):
        if not bool(torch.isfinite(target).all()):
            raise EngineError(f"task {task}: the weights to compress are not finite; lower the learning rate or μ")
        where = "Δ(θ)" if not bool(flags[0]) else "θ"
        raise blame(f"returned non-finite values in {where} of task {task}")
    return theta, delta


class Engine:
    """The LC algorithm over a plan's tasks, for one model.

    Args:
        model: the model whose parameters the plan names (a DDP/DataParallel wrapper is fine:
            its ``module.`` prefix is ignored). Move it to its device before building the engine.
        plan: the tasks and the settings.
        settings: overrides ``plan.settings``.

    Raises:
        EngineError: a parameter of the plan is missing from the model, has another shape, or
            is claimed by two tasks.
    """

    def __init__(self, model: nn.Module, plan: Plan, *, settings: Settings | None = None) -> None:
        self.model = model
        self.plan = plan
        self.settings: Settings = settings if settings is not None else plan.settings
        self.mus: tuple[float, ...] = tuple(float(m) for m in self.settings.mu.values())
        self.step: int = 0
        self.thetas: dict[str, Theta] = {}
        self.history: list[StepRecord] = []
        self.converged: bool = False
        self.events = EventBus()
        self.fingerprint = plan_fingerprint(attrs.evolve(plan, settings=self.settings))
        self._mu = 0.0
        self._targets: list[torch.Tensor] | None = None  # Δ(θ) + λ/μ per task, for penalty()
        # (parameter, its piece of Δ(θ), its piece of λ), views into the task tensors, for add_penalty_grad()
        self._param_views: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] | None = None
        self._penalty_seconds = 0.0
        self._step_started = time.perf_counter()
        self._mu_before_step = 0.0
        self._tasks = self._bind(model, plan)

    @staticmethod
    def _bind(model: nn.Module, plan: Plan) -> list[_TaskState]:
        by_name = parameters_by_name(model)
        claimed: dict[str, str] = {}
        states = []
        for task in plan.tasks:
            params = []
            for name, shape in zip(task.parameters, task.shapes):
                if name not in by_name:
                    raise EngineError(
                        f"task {task.name}: the model has no parameter '{name}'{did_you_mean(name, by_name)}"
                    )
                if name in claimed:
                    raise EngineError(f"parameter '{name}' is in two tasks: {claimed[name]} and {task.name}")
                claimed[name] = task.name
                param = by_name[name]
                if tuple(param.shape) != tuple(shape):
                    raise EngineError(
                        f"task {task.name}: parameter '{name}' has shape {tuple(param.shape)}, "
                        f"the plan expects {tuple(shape)}"
                    )
                params.append(param)
            view = task.operator.view  # may be an instance property (structured pruning)
            if view not in ("vector", "matrix", "tensor"):
                raise EngineError(f"task {task.name}: operator {task.operator.name} has unknown view {view!r}")
            try:
                shape = tuple(task.view_shape)
            except ValueError as exc:
                raise EngineError(f"task {task.name}: {exc}") from exc
            states.append(_TaskState(task, params, view, shape))
        return states

    # ----------------------------------------------------------------- state

    @property
    def mu(self) -> float:
        """The current μ: 0.0 until the first LC step starts. A trainer driving the pieces itself
        sets it before each L step (``engine.mu = engine.mus[k]``)."""
        return self._mu

    @mu.setter
    def mu(self, value: float) -> None:
        value = float(value)
        if not (value >= 0 and math.isfinite(value)):
            raise EngineError(f"μ must be a finite number ≥ 0, got {value}")
        if value != self._mu:
            self._mu = value
            self._targets = None

    @property
    def parameters(self) -> tuple[nn.Parameter, ...]:
        """The parameters the plan compresses, task by task."""
        return tuple(p for s in self._tasks for p in s.params)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The plan's tasks, in order."""
        return tuple(s.task for s in self._tasks)

    @property
    def quadratic(self) -> bool:
        """Whether λ stays 0 (``penalty = "quadratic"``)."""
        return self.settings.penalty == "quadratic"

    def _w(self, state: _TaskState) -> torch.Tensor:
        """The task's live weights in its view (differentiable when grad is on)."""
        if state.view == "vector":
            if len(state.params) == 1:
                return state.params[0].reshape(-1)  # (n,)
            return torch.cat([p.reshape(-1) for p in state.params])  # (Σ n,)
        if state.view == "matrix":
            p = state.params[0]
            return p.reshape(p.shape[0], -1)  # (out, in·kh·kw)
        return state.params[0]

    @torch.no_grad()
    def _write(self, state: _TaskState, value: torch.Tensor) -> None:
        """Copy a view-shaped tensor into the task's parameters."""
        for p, piece in zip(state.params, self._split(state, value)):
            p.copy_(piece)

    def _require_theta(self, what: str) -> None:
        if not self.thetas and self._tasks:
            raise EngineError(f"{what} needs a C step first: call direct_compression()")

    # ------------------------------------------------------------ the pieces

    @torch.no_grad()
    def direct_compression(self) -> None:
        """Step 0: ``θ = Π(w)`` at ``μ = 0`` with no warm start, ``λ = 0``; resets the run."""
        self.step = 0
        self._mu = 0.0
        self.converged = False
        self.history = []
        for state in self._tasks:
            state.theta = None
            state.lam = torch.zeros_like(self._w(state))
        self.thetas = {}
        self.c_step()

    @torch.no_grad()
    def c_step(self) -> None:
        """``θ ← Π(w − λ/μ)`` per task (target ``w`` while ``μ = 0``), warm-started from the
        previous ``θ``; then ``Δ(θ)`` is recomputed."""
        mu = self._mu
        for state in self._tasks:
            w = self._w(state)
            if mu > 0 and state.lam is not None and not self.quadratic:
                target = w - state.lam / mu
            else:
                target = w.clone()  # the operator must never alias a live parameter
            theta, delta = _checked_projection(state, target, mu)
            fault_point("c_step")
            state.theta = theta
            state.delta = delta
            if state.lam is None:
                state.lam = torch.zeros_like(w)
            self.thetas[state.task.name] = theta
        self._targets = self._param_views = None

    @torch.no_grad()
    def multiplier_step(self) -> None:
        """``λ ← λ − μ (w − Δ(θ))`` per task; nothing in quadratic mode or while ``μ = 0``."""
        self._require_theta("multiplier_step()")
        if self.quadratic or self._mu == 0:
            return
        for state in self._tasks:
            state.lam.sub_(self._mu * (self._w(state) - state.delta))
        self._targets = None

    def penalty(self) -> torch.Tensor:
        """``Σ_tasks μ/2 ‖w − Δ(θ) − λ/μ‖²``: add it to the L step's loss.

        Differentiable in ``w``: its gradient is ``μ (w − Δ(θ)) − λ``. A 0-dim tensor on the
        parameters' device; 0 while ``μ = 0``.
        """
        fault_point("l_step")
        start = time.perf_counter()
        mu = self._mu
        if mu == 0 or not self._tasks:
            device = self._tasks[0].params[0].device if self._tasks else None
            return torch.zeros((), device=device)
        self._require_theta("penalty()")
        total = None
        for state, target in zip(self._tasks, self._penalty_targets()):
            term = (self._w(state) - target).pow(2).sum()  # one flat op per task
            total = term if total is None else total + term
        out = (mu / 2) * total
        self._penalty_seconds += time.perf_counter() - start
        return out

    @torch.no_grad()
    def add_penalty_grad(self) -> None:
        """``w.grad += μ (w − Δ(θ)) − λ``: the penalty's gradient, added in place.

        The fast way to train with the penalty: call it after ``loss.backward()`` on the data
        loss alone and before ``optimizer.step()``, instead of adding :meth:`penalty` to the
        loss. Same gradient, without autograd building and keeping ``w − Δ + λ/μ``, its square
        and their gradients every batch: three fused ``_foreach`` passes, no temporaries.
        Parameters without a ``.grad`` get one. With a gradient scaler (AMP), call it after
        ``scaler.unscale_(optimizer)``. Nothing happens while ``μ = 0``.
        """
        fault_point("l_step")
        mu = self._mu
        if mu == 0 or not self._tasks:
            return
        self._require_theta("add_penalty_grad()")
        start = time.perf_counter()
        if self._param_views is None:
            self._param_views = [
                (p, delta, lam)
                for s in self._tasks
                for p, delta, lam in zip(s.params, self._split(s, s.delta), self._split(s, s.lam))
            ]
        views = [v for v in self._param_views if v[0].requires_grad]
        for p, _, _ in views:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p, _, _ in views]
        # three fused passes and no temporaries: the engine keeps Δ(θ) and λ, nothing more
        torch._foreach_add_(grads, [p for p, _, _ in views], alpha=mu)  # + μ w
        torch._foreach_add_(grads, [d for _, d, _ in views], alpha=-mu)  # − μ Δ(θ)
        if not self.quadratic:
            torch._foreach_sub_(grads, [lam for _, _, lam in views])  # − λ
        self._penalty_seconds += time.perf_counter() - start

    def _penalty_targets(self) -> list[torch.Tensor]:
        """``Δ(θ) + λ/μ`` per task (``Δ(θ)`` in quadratic mode), view-shaped, for :meth:`penalty`;
        cached until θ, λ or μ change."""
        if self._targets is None:
            mu = self._mu
            with torch.no_grad():
                self._targets = [s.delta if self.quadratic else s.delta + s.lam / mu for s in self._tasks]
        return self._targets

    @staticmethod
    def _split(state: _TaskState, value: torch.Tensor) -> list[torch.Tensor]:
        return split_view(state.view, state.params, value)

    @torch.no_grad()
    def distortion(self) -> float:
        """``Σ_tasks ‖w − Δ(θ)‖²`` (one device sync)."""
        self._require_theta("distortion()")
        if not self._tasks:
            return 0.0
        total = sum((self._w(s) - s.delta).double().pow(2).sum() for s in self._tasks)
        return float(total)

    @contextlib.contextmanager
    def compressed(self) -> Iterator[None]:
        """Inside the block the weights are ``Δ(θ)``; on leaving (even by an exception) they are
        restored exactly::

            with engine.compressed():
                error = evaluate(model)
        """
        self._require_theta("compressed()")
        with torch.no_grad():
            saved = [[p.detach().clone() for p in s.params] for s in self._tasks]
            for state in self._tasks:
                self._write(state, state.delta)
        try:
            yield
        finally:
            with torch.no_grad():
                for state, copies in zip(self._tasks, saved):
                    for p, copy in zip(state.params, copies):
                        p.copy_(copy)

    @torch.no_grad()
    def finalize(self) -> dict[str, Theta]:
        """``w ← Δ(θ)`` for good. Returns ``θ`` by task name (what gets stored)."""
        self._require_theta("finalize()")
        for state in self._tasks:
            self._write(state, state.delta)
        return dict(self.thetas)

    def storage(self) -> list[tuple[Task, Storage | None]]:
        """Per task, the size of its ``θ`` (the predicted size before any C step)."""
        return [(s.task, s.task.operator.storage(s.shape, s.theta)) for s in self._tasks]

    def _total_storage(self) -> tuple[int | None, int | None]:
        sizes = [size for _, size in self.storage()]
        if any(size is None for size in sizes):
            return None, None
        return sum(s.bits for s in sizes), sum(s.params for s in sizes)

    # --------------------------------------------------------- checkpointing

    def _task_descriptions(self) -> list[str]:
        """``"task: operator"`` per task: what a saved state must match to be loaded."""
        return [f"{s.task.name}: {s.task.operator!r}" for s in self._tasks]

    def state_dict(self) -> dict[str, Any]:
        """The whole LC state as tensors and plain data (``torch.save`` /
        ``torch.load(weights_only=True)``). The model's weights and the optimizer are not in it:
        save them beside it."""
        return {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "tasks": self._task_descriptions(),
            "settings": repr(self.settings),
            "plugin_versions": plugin_versions(),
            "mus": list(self.mus),
            "penalty": self.settings.penalty,
            "step": self.step,
            "mu": self._mu,
            "converged": self.converged,
            "lambdas": {s.task.name: s.lam.detach().clone() for s in self._tasks if s.lam is not None},
            "thetas": {
                name: {k: v.detach().clone() for k, v in theta.items()} for name, theta in self.thetas.items()
            },
            "history": [r.to_dict() for r in self.history],
        }

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise EngineError(f"not an lcdsl engine state of format {STATE_FORMAT} (found {found!r})")
        if state.get("fingerprint") == self.fingerprint:
            return
        ours = self._task_descriptions()
        theirs = list(state.get("tasks", []))
        if theirs != ours:
            missing = [t for t in theirs if t not in ours]
            extra = [t for t in ours if t not in theirs]
            detail = "; ".join(
                part
                for part in (
                    f"only in the checkpoint: {', '.join(missing)}" if missing else "",
                    f"only in this plan: {', '.join(extra)}" if extra else "",
                )
                if part
            ) or "the tasks are in another order"
            raise EngineError(f"cannot resume: the checkpoint was made for other tasks ({detail})")
        if state.get("settings") != repr(self.settings):
            raise EngineError(
                "cannot resume: the checkpoint was made with other settings "
                f"(checkpoint: {state.get('settings')}; now: {self.settings!r})"
            )
        raise EngineError("cannot resume: the checkpoint was made for another plan (fingerprint differs)")

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
        for s in self._tasks:
            name = s.task.name
            if (name in thetas) != (name in lambdas) or (thetas and name not in thetas):
                raise EngineError(f"cannot resume: the checkpoint's state of task {name} is incomplete")
        with torch.no_grad():
            for s in self._tasks:
                name = s.task.name
                if name not in thetas:
                    s.theta = s.delta = s.lam = None
                    continue
                device = s.params[0].device
                lam = lambdas[name].to(device)
                if tuple(lam.shape) != s.shape:
                    raise EngineError(
                        f"cannot resume: λ of task {name} has shape {tuple(lam.shape)}, expected {s.shape}"
                    )
                s.theta = {k: v.to(device) for k, v in thetas[name].items()}
                s.lam = lam
                s.delta = s.task.operator.decompress(s.theta, s.shape).detach()
        self.thetas = {s.task.name: s.theta for s in self._tasks if s.theta is not None}
        self.step = int(state["step"])
        self._mu = float(state["mu"])
        self.converged = bool(state.get("converged", False))
        self.history = [StepRecord.from_dict(r) for r in state.get("history", [])]
        self._targets = self._param_views = None

    # -------------------------------------------------------------- the loop

    def _check_finite(self, k: int, loss: float | None) -> None:
        where = f"LC step {k + 1} (μ={self.mus[k]:.4g})" if k >= 0 else "direct compression"
        if loss is not None and not math.isfinite(loss):
            raise EngineError(f"{where}: the L step's loss is {loss}; lower the learning rate or μ")
        with torch.no_grad():
            named = list(self.model.named_parameters())
            finite = [torch.isfinite(p).all() for _, p in named]
            if named and bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
                return  # one device sync when all is well
            for (name, _), ok in zip(named, finite):
                if not bool(ok):
                    raise EngineError(
                        f"{where}: parameter '{strip_ddp_prefix(name)}' has non-finite values; "
                        "lower the learning rate or μ"
                    )

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
        self.direct_compression()
        bits, params = self._total_storage()
        record = StepRecord(0, 0.0, None, self.distortion(), self._evaluate(evaluate), bits, params)
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
