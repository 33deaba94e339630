"""C steps shared across ranks: each task solved by one rank, its θ and Δ(θ) sent to the others.

Under DDP every rank holds the same ``w`` and ``λ``, so any rank can solve any task and get the
same ``θ``; under FSDP every rank can gather any task's whole target. Repeating every C step on
every rank wastes ``world − 1`` ranks' time; :class:`SharedCSteps` gives each task to one rank:

1. **cost** (:func:`c_step_cost`): the task's weights × its operator's cost per weight, in
   units of sorting one weight — an operator's own ``c_step_cost(shape)`` when it has one
   (``quant``: ``n·log₂ n·log₂ k``), else ``n·min(rows, cols)/32`` for a ``"matrix"`` view (a
   truncated SVD) and ``n·log₂ n`` for the others (selections and sorts);
2. **assignment** (:func:`assign_tasks`): longest-processing-time first: tasks by falling cost
   (ties: plan order), each to the rank with the least load so far (ties: the lower rank). Plain
   arithmetic on the plan's shapes, so every rank computes the same assignment with no message;
3. **exchange**: each rank solves its tasks, then each task's owner broadcasts its ``θ`` and
   ``Δ(θ)`` as raw bytes (one broadcast a task, after one small all-gather of their shapes and
   dtypes), so every rank ends with the very bits the owner computed, which are the bits one
   process computes from the same target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.distributed as dist

from lcdsl.errors import EngineError
from lcdsl.operators.base import Theta
from lcdsl.plan.model import Task

if TYPE_CHECKING:
    from lcdsl.engine.core import Engine

__all__ = ["CStepSharing", "SharedCSteps", "c_step_cost", "assign_tasks"]


class CStepSharing(Protocol):
    """What :meth:`Engine.c_step <lcdsl.engine.Engine.c_step>` asks of a sharing of its tasks."""

    def assignment(self, engine: Engine) -> list[bool]:
        """Per task, in plan order: whether this rank solves it."""

    def exchange(
        self,
        engine: Engine,
        solved: dict[int, tuple[Theta, torch.Tensor]],
        receive: Callable[[int, Theta, torch.Tensor], None],
    ) -> None:
        """Send this rank's solved tasks (index → θ and the whole view-shaped Δ(θ)) to the
        others, and call ``receive(index, θ, Δ(θ))`` for each task another rank solved, one at
        a time (collective)."""


def c_step_cost(task: Task) -> float:
    """A task's C-step cost in arbitrary units, comparable between tasks of one plan."""
    shape = task.view.shape
    custom = getattr(task.operator, "c_step_cost", None)
    if callable(custom):
        return float(custom(shape))
    n = math.prod(shape)
    if task.view.kind == "matrix":
        # a truncated SVD through the Gram matrix: n·min(rows, cols) multiply-adds, in BLAS, which
        # does ~32 of them in the time the sort-like kernels take a step (bench/cstep_ranks.py)
        return float(n * min(shape)) / 32
    return float(n * max(1.0, math.log2(max(n, 1))))  # sorting the weights


def assign_tasks(costs: Sequence[float], world: int) -> list[int]:
    """The rank that solves each task: greedy longest-processing-time first, deterministic.

    Tasks in order of falling cost (ties: the earlier task first) each go to the rank whose
    assigned cost is smallest (ties: the lower rank). Its largest load is at most 4/3 of the best
    possible one (Graham's bound).

    Returns:
        One rank per task, in the order of ``costs``.
    """
    if world < 1:
        raise EngineError(f"the world size must be at least 1, got {world}")
    loads = [0.0] * world
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's numbers as a flat uint8 tensor (its exact bits, whatever its dtype)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


class SharedCSteps:
    """The tasks of one engine shared among the ranks of the default process group.

    Args:
        tasks: the engine's tasks, in plan order.
        rank: this process's rank.
        world: the number of processes.
    """

    def __init__(self, tasks: Sequence[Task], rank: int, world: int) -> None:
        self.rank, self.world = rank, world
        self.costs = [c_step_cost(task) for task in tasks]
        self.owners = assign_tasks(self.costs, world)

    def assignment(self, engine: Engine) -> list[bool]:
        return [owner == self.rank for owner in self.owners]

    def exchange(
        self,
        engine: Engine,
        solved: dict[int, tuple[Theta, torch.Tensor]],
        receive: Callable[[int, Theta, torch.Tensor], None],
    ) -> None:
        if self.world == 1:
            return
        # what each owner will send: θ's keys, shapes and dtypes (Δ(θ)'s are the view's)
        mine = {
            index: [(key, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in sorted(theta.items())]
            for index, (theta, _) in solved.items()
        }
        everyone: list[dict[int, list[tuple[str, tuple[int, ...], str]]] | None] = [None] * self.world
        dist.all_gather_object(everyone, mine)
        layouts = {index: layout for part in everyone for index, layout in (part or {}).items()}
        for index, (state, owner) in enumerate(zip(engine._tasks, self.owners)):
            if owner == self.rank:
                theta, delta = solved[index]
                buffer = torch.cat([_as_bytes(theta[key]) for key, _, _ in layouts[index]] + [_as_bytes(delta)])
                dist.broadcast(buffer, src=owner)
                continue
            device = state.tensors.local_params(state.params)[0].device
            dtype = state.params[0].dtype
            parts = [(key, shape, getattr(torch, name)) for key, shape, name in layouts[index]]
            parts.append(("", state.view.shape, dtype))  # Δ(θ) last
            sizes = [math.prod(shape) * torch.empty((), dtype=dt).element_size() for _, shape, dt in parts]
            buffer = torch.empty(sum(sizes), dtype=torch.uint8, device=device)
            dist.broadcast(buffer, src=owner)
            tensors = [
                chunk.clone().view(dt).reshape(shape)  # a copy: its own storage, aligned for `dt`
                for chunk, (_, shape, dt) in zip(torch.split(buffer, sizes), parts)
            ]
            del buffer
            receive(index, {key: t for (key, _, _), t in zip(parts[:-1], tensors[:-1])}, tensors[-1])
