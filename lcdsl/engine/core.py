"""The LC engine: the Learning-Compression algorithm's pieces, for any trainer to drive.

The engine keeps, per task of a :class:`~lcdsl.plan.Plan`: its :class:`~lcdsl.operators.View`,
``λ`` as a tensor of the view's shape, ``θ``, and ``Δ(θ)`` unless it rebuilds it from ``θ`` where
it is used (:mod:`lcdsl.engine.memory`: the ``delta`` and ``lambda_dtype`` settings). The weights
``w`` are never copied: each use reads the model's live parameters. Everything stays on the
parameters' device.

The pieces (see ``docs/engine.md`` for a training loop that uses them):

- :meth:`Engine.direct_compression`: ``θ = Π(w)``, ``λ = 0`` (step 0, ``μ = 0``);
- :meth:`Engine.penalty`: ``Σ μ/2 ‖w − Δ(θ) − λ/μ‖²``, a differentiable scalar to add to the loss;
- :meth:`Engine.c_step`: ``θ ← Π(w − λ/μ)``;
- :meth:`Engine.multiplier_step`: ``λ ← λ − μ (w − Δ(θ))``;
- :meth:`Engine.finalize`: ``w ← Δ(θ)``;

and :meth:`Engine.run` drives them along the μ schedule: a fixed list (:attr:`Engine.mus`), or
``mu = auto(…)``, where the engine decides each μ from what the steps before measured
(:mod:`lcdsl.engine.schedule`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import torch
from torch import nn

from lcdsl.engine.budgets import BudgetSolver
from lcdsl.engine.events import EventBus, StepRecord
from lcdsl.engine.loop import EngineLoop
from lcdsl.engine.memory import TaskState, keeps_delta, lambda_dtype, nbytes, state_bytes
from lcdsl.engine.shards import local_of, reshard, task_tensors, total_over_tasks
from lcdsl.engine.state import EngineState, plan_fingerprint
from lcdsl.errors import EngineError, LcdslError, PluginError, did_you_mean
from lcdsl.faults import fault_point
from lcdsl.operators.base import Storage, Theta
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import parameters_by_name
from lcdsl.plan.settings import Auto, Settings
from lcdsl.plugins.manager import PluginRaised, plugin_code
from lcdsl.plugins.origin import operator_origin

if TYPE_CHECKING:
    from lcdsl.engine.sharing import CStepSharing

__all__ = ["Engine"]


def _checked_projection(
    state: TaskState, target: torch.Tensor, mu: float, option: int | None = None
) -> tuple[Theta, torch.Tensor]:
    """``θ = Π(target)`` and ``Δ(θ)``, refusing what breaks the operator contract.

    ``option``: for a task of a budget, the option of its :class:`~lcdsl.operators.choice.Choice`
    the budget's allocation chose (:meth:`Choice.project_option`); None: the operator's own C step.

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
        with plugin_code():  # SystemExit and the like from the plugin come out as PluginRaised
            if option is None:
                theta = op.project(target, mu=mu, warm=state.theta)
            else:
                theta = op.project_option(target, option, mu=mu, warm=state.theta)
            if not isinstance(theta, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in theta.items()
            ):
                raise blame(f"returned a θ of type {type(theta).__name__} for task {task}, not a dict of named tensors")
            delta = op.decompress(theta, state.view.shape)
    except LcdslError:
        raise
    except Exception as exc:  # a plugin may raise anything; report it with its name
        raised = exc.original if isinstance(exc, PluginRaised) else exc
        raise blame(f"raised {type(raised).__name__} on task {task}: {raised}") from raised
    if not isinstance(delta, torch.Tensor):
        raise blame(f"decompressed task {task} to a {type(delta).__name__}, not a tensor")
    delta = delta.detach()
    if tuple(delta.shape) != state.view.shape:
        raise blame(f"decompressed task {task} to shape {tuple(delta.shape)}, expected {state.view.shape}")
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


class Engine(EngineState, EngineLoop):
    """The LC algorithm over a plan's tasks, for one model.

    Args:
        model: the model whose parameters the plan names (a DDP/DataParallel/FSDP or
            ``torch.compile`` wrapper is fine: names are the wrapped model's, see
            :func:`lcdsl.plan.names.unwrap`). Move it to its device before building the engine.
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
        """The μ of every LC step: the whole list for a fixed schedule; under ``auto``, the μ of
        each step decided so far (the engine appends one at each :meth:`begin_step`)."""
        self.step: int = 0
        self.thetas: dict[str, Theta] = {}
        self.history: list[StepRecord] = []
        self.converged: bool = False
        self.warnings: list[dict[str, object]] = []
        """Every warning of the run (diverged, rolled-back or unstable steps) as plain data."""
        self.events = EventBus()
        self.fingerprint = plan_fingerprint(attrs.evolve(plan, settings=self.settings))
        self._mu = 0.0
        self._targets: list[torch.Tensor] | None = None  # Δ(θ) + λ/μ per task, for penalty()
        # (parameter, its piece of Δ(θ), its piece of λ), views into the task tensors, for add_penalty_grad()
        self._param_views: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] | None = None
        self._penalty_seconds = 0.0
        self._penalty_calls = 0  # the L step's iterations: penalty() or add_penalty_grad() calls
        self._step_started = time.perf_counter()
        self._mu_before_step = 0.0
        self._weight_norm2 = 0.0  # Σ ‖w‖² of the compressed parameters at direct compression
        self._backoff = 0  # rollbacks of the current LC step (auto)
        self._retries_used = 0  # rollbacks in the whole run (auto)
        self._snapshot: dict[str, object] | None = None  # the state before the current L step (auto)
        self._last_change: float | None = None  # Σ ‖Δ(θ) − previous Δ(θ)‖² of the last C step
        self._moved: dict[str, tuple[torch.Tensor, bool]] = {}  # per task of a C step: (moved², sharded)
        self._tasks = self._bind(model, plan, self.settings)
        self._budgets = BudgetSolver(plan.budgets, self._tasks)  # EngineError for budgets it cannot solve
        self.c_step_sharing: CStepSharing | None = None
        """Who solves which task's C step and how the others receive its θ and Δ(θ); None: this
        process solves every task (see :func:`lcdsl.engine.distributed.share_c_steps`)."""

    @staticmethod
    def _bind(model: nn.Module, plan: Plan, settings: Settings) -> list[TaskState]:
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
            try:
                view = task.view  # an unknown view, or shapes the view cannot take
            except ValueError as exc:
                raise EngineError(f"task {task.name}: {exc}") from exc
            tensors = task_tensors(task.name, view, params)
            keep = keeps_delta(settings.delta, task) or tensors.sharded  # shards keep Δ(θ): see TaskState
            lam = lambda_dtype(settings.lambda_dtype, params[0].dtype)
            states.append(TaskState(task, params, view, keep, lam, tensors=tensors))
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
    def adaptive(self) -> bool:
        """Whether μ is decided as the run goes (``mu = auto(…)``)."""
        return isinstance(self.settings.mu, Auto)

    @property
    def max_steps(self) -> int:
        """The most LC steps the schedule runs: its length, or ``auto``'s ``steps`` budget."""
        mu = self.settings.mu
        return mu.steps if isinstance(mu, Auto) else len(self.mus)

    @property
    def done(self) -> bool:
        """Whether the run is over: converged, or every step of the schedule ran."""
        return self.converged or self.step >= self.max_steps

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

    def _require_theta(self, what: str) -> None:
        if not self.thetas and self._tasks:
            raise EngineError(f"{what} needs a C step first: call direct_compression()")

    # ------------------------------------------------------------ the pieces

    @torch.no_grad()
    def direct_compression(self) -> None:
        """Step 0: ``θ = Π(w)`` at ``μ = 0`` with no warm start, ``λ = 0``; resets the run.

        ``μ = 0`` is the limit ``μ → 0⁺``: constraint forms ignore it, penalty forms return their
        cheapest θ (rank 0, nothing kept; :meth:`lcdsl.operators.base.Operator.project`)."""
        self.step = 0
        self._mu = 0.0
        self.converged = False
        self.history = []
        self.warnings = []
        self._backoff = self._retries_used = 0
        if self.adaptive:
            self.mus = ()
        for state in self._tasks:
            state.set_theta(None)
            state.zero_lambda()
        self.thetas = {}
        self.c_step()

    @torch.no_grad()
    def c_step(self) -> None:
        """``θ ← Π(w − λ/μ)`` per task (target ``w`` while ``μ = 0``), warm-started from the
        previous ``θ``; then ``Δ(θ)`` is recomputed.

        With :attr:`c_step_sharing` set, this rank solves only the tasks assigned to it and the
        sharing hands every rank the others' ``θ`` and ``Δ(θ)``. A sharded (FSDP) task's target
        is all-gathered first, by every rank in task order, before any rank solves."""
        mu = self._mu
        step = self.step + 1 if mu > 0 else self.step  # the LC step this C step ends (0: direct)
        sharing = self.c_step_sharing
        if sharing is not None and self._budgets:
            raise EngineError(
                "budgets (within …) are not supported yet with C steps shared across ranks (share_c_steps): "
                "run without sharing them"
            )
        solves = sharing.assignment(self) if sharing is not None else [True] * len(self._tasks)
        # the option of every task of a budget: the exact knapsack over the tasks' distortion tables
        options = self._budgets.allocate(lambda state: self._c_step_target(state, mu), mu)
        gathered: dict[int, torch.Tensor] = {}
        for index, state in enumerate(self._tasks):
            if state.tensors.sharded:
                target = self._c_step_target(state, mu)  # a collective: every rank takes part
                if solves[index]:
                    gathered[index] = target  # only the task's solver keeps it
        solved: dict[int, tuple[Theta, torch.Tensor]] = {}  # kept for the sharing's broadcasts
        self._moved = {}
        for index, state in enumerate(self._tasks):
            if not solves[index]:
                continue
            self.events.emit("c_step_task", engine=self, step=step, index=index + 1, total=len(self._tasks),
                             task=state.task)  # fmt: skip
            target = gathered.pop(index) if index in gathered else self._c_step_target(state, mu)
            theta, delta = _checked_projection(state, target, mu, options.get(index))  # Δ(θ): the whole view
            del target
            fault_point("c_step")
            self._adopt(state, theta, delta)
            if sharing is not None:
                solved[index] = (theta, delta)
            del delta
        if sharing is not None:
            sharing.exchange(self, solved, lambda index, theta, delta: self._adopt(self._tasks[index], theta, delta))
        self._last_change = self._change_of_delta()
        self._targets = self._param_views = None

    def _adopt(self, state: TaskState, theta: Theta, delta: torch.Tensor) -> None:
        """A task's new ``θ`` and whole view-shaped ``Δ(θ)``: ``Δ(θ)`` kept in the task's state
        layout, or dropped to be rebuilt per use; how far ``Δ(θ)`` moved is noted first."""
        moved = state.moved(delta)
        if moved is not None:
            self._moved[state.task.name] = (moved, state.tensors.sharded)
        state.set_theta(theta, delta)
        if state.lam is None:
            state.zero_lambda()
        self.thetas[state.task.name] = theta

    def _change_of_delta(self) -> float | None:
        """``Σ ‖Δ(θ) − previous Δ(θ)‖²`` over the tasks of the C step just made (None at direct
        compression); a sharded task's share is summed over the ranks."""
        if not self._moved:
            return None
        moved, self._moved = list(self._moved.values()), {}
        return total_over_tasks(moved)

    def _c_step_target(self, state: TaskState, mu: float) -> torch.Tensor:
        """``w − λ/μ`` (``w`` while ``μ = 0`` or in quadratic mode) as the whole view-shaped
        tensor: a fresh tensor (the operator must never alias a live parameter), all-gathered
        from the shards of a sharded task."""
        return state.target(mu, use_lambda=mu > 0 and state.lam is not None and not self.quadratic)

    @torch.no_grad()
    def multiplier_step(self) -> None:
        """``λ ← λ − μ (w − Δ(θ))`` per task; nothing in quadratic mode or while ``μ = 0``."""
        self._require_theta("multiplier_step()")
        if self.quadratic or self._mu == 0:
            return
        for state in self._tasks:
            state.multiplier_step(self._mu)  # block by block: no task-sized temporaries
        self._targets = None

    def penalty(self) -> torch.Tensor:
        """``Σ_tasks μ/2 ‖w − Δ(θ) − λ/μ‖²``: add it to the L step's loss.

        Differentiable in ``w``: its gradient is ``μ (w − Δ(θ)) − λ``. A 0-dim tensor on the
        parameters' device; 0 while ``μ = 0``. For sharded (FSDP) tasks it is this rank's share
        of the sum (over its shards), which gives the right gradient on those shards.
        """
        fault_point("l_step")
        start = time.perf_counter()
        mu = self._mu
        if mu == 0 or not self._tasks:
            device = local_of(self._tasks[0].params[0]).device if self._tasks else None
            return torch.zeros((), device=device)
        self._require_theta("penalty()")
        total = None
        for state, target in zip(self._tasks, self._penalty_targets()):
            term = (state.tensors.local(state.params) - target).pow(2).sum()  # one flat op per task
            total = term if total is None else total + term
        out = (mu / 2) * total
        self._penalty_calls += 1
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
        for p in self.parameters:
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
        if self._param_views is None:  # the tasks that keep Δ(θ): whole parameters at once
            self._param_views = [
                (p, delta, lam)
                for s in self._tasks
                if s.delta is not None
                for p, delta, lam in zip(s.params, s.tensors.split(s.delta), s.tensors.split(s.lam))
            ]
        views = [v for v in self._param_views if v[0].requires_grad]  # frozen ones: only compressed
        if views:
            grads = [local_of(p.grad) for p, _, _ in views]  # a sharded parameter: its local shard only
            # three fused passes and no temporaries beside what the engine keeps
            torch._foreach_add_(grads, [local_of(p) for p, _, _ in views], alpha=mu)  # + μ w
            torch._foreach_add_(grads, [d for _, d, _ in views], alpha=-mu)  # − μ Δ(θ)
            if not self.quadratic:
                torch._foreach_sub_(grads, [lam for _, _, lam in views])  # − λ
        for state in self._tasks:
            if state.delta is None:  # Δ(θ) rebuilt from θ a block at a time, the same passes on each
                for block, w, delta in state.pieces_to_train():
                    grad = block.of_param(state.params[block.param].grad)
                    grad.add_(w, alpha=mu)  # + μ w
                    grad.add_(delta, alpha=-mu)  # − μ Δ(θ)
                    if not self.quadratic:
                        grad.sub_(block.of_view(state.lam))  # − λ
        self._penalty_calls += 1
        self._penalty_seconds += time.perf_counter() - start

    def _penalty_targets(self) -> list[torch.Tensor]:
        """``Δ(θ) + λ/μ`` per task (``Δ(θ)`` in quadratic mode), view-shaped, for :meth:`penalty`;
        cached until θ, λ or μ change, unless a task rebuilds Δ(θ) (then made anew each call, so
        the memory stays what the ``delta`` setting asked for)."""
        if self._targets is not None:
            return self._targets
        mu = self._mu
        with torch.no_grad():
            targets = [
                s.full_delta() if self.quadratic else s.full_delta() + s.lam.to(s.dtype) / mu for s in self._tasks
            ]
        if all(s.delta is not None for s in self._tasks):
            self._targets = targets
        return targets

    @torch.no_grad()
    def distortion(self) -> float:
        """``Σ_tasks ‖w − Δ(θ)‖²`` (one device sync; one all-reduce when tasks are sharded)."""
        self._require_theta("distortion()")
        if not self._tasks:
            return 0.0
        return total_over_tasks([(s.distortion(), s.tensors.sharded) for s in self._tasks])  # float64 per block

    @contextlib.contextmanager
    def compressed(self) -> Iterator[None]:
        """Inside the block the weights are ``Δ(θ)``; on leaving (even by an exception) they are
        restored exactly::

            with engine.compressed():
                error = evaluate(model)
        """
        self._require_theta("compressed()")
        with torch.no_grad():
            self._before_writing_shards()
            saved = [[p.detach().clone() for p in s.tensors.local_params(s.params)] for s in self._tasks]
            for state in self._tasks:
                state.write_delta()
        try:
            yield
        finally:
            with torch.no_grad():
                self._before_writing_shards()
                for state, copies in zip(self._tasks, saved):
                    for p, copy in zip(state.tensors.local_params(state.params), copies):
                        p.copy_(copy)

    @torch.no_grad()
    def finalize(self) -> dict[str, Theta]:
        """``w ← Δ(θ)`` for good. Returns ``θ`` by task name (what gets stored)."""
        self._require_theta("finalize()")
        self._before_writing_shards()
        for state in self._tasks:
            state.write_delta()
        return dict(self.thetas)

    def _before_writing_shards(self) -> None:
        """FSDP keeps a module's gathered parameters after a forward without backward; free them,
        so that the next forward gathers what the engine writes into the shards."""
        if any(s.tensors.sharded for s in self._tasks):
            reshard(self.model)

    def storage(self) -> list[tuple[Task, Storage | None]]:
        """Per task, the size of its ``θ`` (the predicted size before any C step)."""
        return [(s.task, s.task.operator.storage(s.view.shape, s.theta)) for s in self._tasks]

    def state_bytes(self) -> dict[str, int]:
        """Bytes the engine keeps beside the model, by component: ``lambda``, ``delta`` (0 where
        Δ(θ) is rebuilt from θ), ``theta``, ``penalty_target`` (cached by :meth:`penalty` only),
        and ``weights``, the compressed parameters themselves, to divide by."""
        return state_bytes(self._tasks, {"penalty_target": sum(nbytes(t) for t in self._targets or [])})

    def _total_storage(self) -> tuple[int | None, int | None]:
        sizes = [size for _, size in self.storage()]
        if any(size is None for size in sizes):
            return None, None
        return sum(s.bits for s in sizes), sum(s.params for s in sizes)
