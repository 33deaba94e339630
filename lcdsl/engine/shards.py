"""Where a task's engine tensors live: whole on every rank, or as the shards of FSDP2 parameters.

The engine keeps ``Δ(θ)`` and ``λ`` per task in the *state layout* its :class:`TaskTensors`
gives, and every elementwise piece (penalty, its gradient, the multiplier step, the distortion)
works in that layout with no communication:

- :class:`WholeTensors` (plain parameters, DDP, one process): the state layout is the task's
  :class:`~lcdsl.operators.View` shape, and every method is the view's own.
- :class:`ShardedTensors` (parameters that are ``DTensor`` s, as
  ``torch.distributed.fsdp.fully_shard`` makes them): the state layout is this rank's local
  shards, each flattened, concatenated in the task's parameter order, shape ``(Σ local numel,)``.
  Only the C step needs the whole view: :meth:`ShardedTensors.full` all-gathers the shards
  (``DTensor.full_tensor``), and :meth:`ShardedTensors.shard` cuts a whole view-shaped tensor
  back to this rank's shards with no communication (``distribute_tensor(…, src_data_rank=None)``
  slices the copy every rank holds).

The elementwise pieces are right on shards because the LC penalty is a sum over weights: its
gradient on a weight depends on that weight's ``w``, ``Δ(θ)`` and ``λ`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from lcdsl.errors import EngineError
from lcdsl.operators.view import View

__all__ = [
    "TaskTensors", "WholeTensors", "ShardedTensors", "task_tensors", "is_sharded", "local_of", "sum_over_ranks",
    "total_over_tasks",
]  # fmt: skip


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (checked without importing ``torch.distributed.tensor``
    where it was never loaded: a model that holds DTensors loaded it)."""
    import sys

    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


class TaskTensors(Protocol):
    """How the engine reads and writes one task's tensors (see the module docstring)."""

    sharded: bool
    """Whether the state layout is a rank's shards (collectives in :meth:`full`)."""

    def local(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The parameters in the state layout (differentiable; a view where possible)."""

    def split(self, value: torch.Tensor) -> list[torch.Tensor]:
        """A state-layout ``value`` cut into one piece a parameter, shaped like
        :meth:`local_params`' tensors (views into ``value``)."""

    def local_params(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors that hold this rank's numbers of each parameter (the parameter itself,
        or its local shard)."""

    def scatter(self, value: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Copy a state-layout ``value`` into the parameters, in place."""

    def full(self, value: torch.Tensor) -> torch.Tensor:
        """A state-layout ``value`` as the whole view-shaped tensor (collective when sharded)."""

    def shard(self, whole: torch.Tensor) -> torch.Tensor:
        """A whole view-shaped tensor in the state layout (no communication)."""


class WholeTensors:
    """A task whose parameters are whole on this rank: the state layout is the view's."""

    sharded = False

    def __init__(self, view: View) -> None:
        self.view = view

    def local(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.view.gather(params)

    def split(self, value: torch.Tensor) -> list[torch.Tensor]:
        return self.view.split(value)

    def local_params(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(params)

    def scatter(self, value: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        self.view.scatter(value, params)

    def full(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def shard(self, whole: torch.Tensor) -> torch.Tensor:
        return whole


class ShardedTensors:
    """A task whose parameters are ``DTensor`` s: the state layout is this rank's shards.

    Args:
        view: the task's view (of the parameters' global shapes).
        params: the task's parameters, every one a ``DTensor``.
    """

    sharded = True

    def __init__(self, view: View, params: Sequence[torch.Tensor]) -> None:
        self.view = view
        # (mesh, placements, global shape, global stride) per parameter: what rebuilds a DTensor
        self.specs = [(p.device_mesh, tuple(p.placements), tuple(p.shape), p.stride()) for p in params]
        self.local_shapes = [tuple(p.to_local().shape) for p in params]
        self.sizes = [math.prod(s) for s in self.local_shapes]

    def local_params(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [p.to_local() for p in params]  # aliases of the shards: in-place ops reach the parameter

    def local(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        pieces = [t.reshape(-1) for t in self.local_params(params)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # (Σ local numel,)

    def split(self, value: torch.Tensor) -> list[torch.Tensor]:
        pieces = torch.split(value, self.sizes)
        return [piece.view(shape) for piece, shape in zip(pieces, self.local_shapes)]

    @torch.no_grad()
    def scatter(self, value: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        for local, piece in zip(self.local_params(params), self.split(value)):
            local.copy_(piece)

    def pieces(self, value: torch.Tensor) -> list[torch.Tensor]:
        """A state-layout ``value`` as one ``DTensor`` a parameter (no communication): what a
        sharded checkpoint saves."""
        from torch.distributed.tensor import DTensor

        return [
            DTensor.from_local(piece, mesh, placements, run_check=False, shape=shape, stride=stride)
            for piece, (mesh, placements, shape, stride) in zip(self.split(value), self.specs)
        ]

    def from_pieces(self, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        """The state layout of one ``DTensor`` a parameter (each with the parameter's shape and
        placements): the inverse of :meth:`pieces`.

        Raises:
            ValueError: a piece is not a DTensor of its parameter's shape and placements.
        """
        if len(pieces) != len(self.specs):
            raise ValueError(f"{len(pieces)} pieces for {len(self.specs)} parameters")
        locals_ = []
        for piece, (_, placements, shape, _) in zip(pieces, self.specs):
            if not is_sharded(piece) or tuple(piece.shape) != shape or tuple(piece.placements) != placements:
                found = f"{type(piece).__name__} of shape {tuple(piece.shape)}"
                raise ValueError(f"a piece is a {found}, expected a DTensor of shape {shape} placed as {placements}")
            locals_.append(piece.to_local().reshape(-1))
        return torch.cat(locals_) if len(locals_) > 1 else locals_[0].clone()

    def full(self, value: torch.Tensor) -> torch.Tensor:
        whole = [piece.full_tensor() for piece in self.pieces(value)]  # all-gather, one parameter at a time
        return self.view.gather(whole)  # (view shape)

    def shard(self, whole: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import distribute_tensor

        locals_ = [
            distribute_tensor(piece.contiguous(), mesh, placements, src_data_rank=None).to_local().reshape(-1)
            for piece, (mesh, placements, _, _) in zip(self.view.split(whole), self.specs)
        ]  # every rank holds `whole`: each keeps its own slice, nothing is sent
        return torch.cat(locals_) if len(locals_) > 1 else locals_[0].clone()


def task_tensors(task_name: str, view: View, params: Sequence[nn.Parameter]) -> TaskTensors:
    """The :class:`TaskTensors` of a task's parameters: sharded when they are DTensors.

    Raises:
        EngineError: some of the task's parameters are DTensors and some are not.
    """
    flags = [is_sharded(p) for p in params]
    if not any(flags):
        return WholeTensors(view)
    if not all(flags):
        raise EngineError(
            f"task {task_name}: some of its parameters are sharded (FSDP) and some are not; "
            "shard all of a joint task's modules, or none"
        )
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    world = dist.get_world_size() if dist.is_initialized() else 1
    for p in params:
        mesh, placements = p.device_mesh, tuple(p.placements)
        # each weight on exactly one rank: what makes the penalty local and the distortion a plain sum
        if mesh.ndim != 1 or mesh.size() != world or not all(isinstance(pl, Shard) for pl in placements):
            raise EngineError(
                f"task {task_name}: a parameter is placed as {placements} on a mesh of shape "
                f"{tuple(mesh.shape)}; the engine takes parameters sharded over all {world} ranks "
                "along one mesh dimension (fully_shard), not replicated (HSDP) or tensor-parallel"
            )
    return ShardedTensors(view, params)


def local_of(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor that holds this rank's numbers of ``tensor``: its local shard for a DTensor,
    else ``tensor`` itself (an alias either way: in-place ops reach ``tensor``)."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over every rank of the job (an all-reduce; ``value`` in one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def total_over_tasks(parts: Sequence[tuple[torch.Tensor, bool]]) -> float:
    """``Σ`` of per-task 0-dim tensors ``(value, sharded)``: whole tasks' values as they are, sharded
    tasks' (each rank's share) summed over the ranks in one all-reduce. One device sync."""
    whole = sum(value for value, sharded in parts if not sharded)
    if any(sharded for _, sharded in parts):
        whole = whole + sum_over_ranks(sum(value for value, sharded in parts if sharded))
    return float(whole)


def reshard(model: nn.Module) -> None:
    """Free the gathered (unsharded) parameters of every ``fully_shard`` ed module of ``model``.

    Call it before writing into the shards outside a training step: after a forward without a
    backward (an evaluation) the root module keeps its gathered parameters, and its next forward
    would use them instead of gathering the shards' new values.
    """
    import sys

    fsdp = sys.modules.get("torch.distributed.fsdp")
    kind = getattr(fsdp, "FSDPModule", None) if fsdp is not None else None
    if kind is None:
        return
    for module in model.modules():
        if isinstance(module, kind):
            module.reshard()
