"""What the engine keeps per compressed weight, and the blocks it works through.

Per task the engine holds ``θ`` (the operator's compact form), the multipliers ``λ`` (view-shaped,
in the ``lambda_dtype`` setting's dtype) and, unless it rebuilds it, ``Δ(θ)`` (view-shaped, in
the weights' dtype). Everything else it needs is made and dropped one block at a time:

- the C step's target ``w − λ/μ`` is one task-sized buffer, filled block by block from the live
  parameters and ``λ`` (no ``λ/μ`` copy, no gathered copy of ``w``);
- the multiplier step, the distortion, and the penalty's gradient in ``recompute`` mode work on
  blocks of at most :data:`BLOCK_ELEMENTS` entries, so their temporaries are a few MiB whatever
  the task's size.

``delta`` setting: ``keep`` holds ``Δ(θ)`` (4 bytes a float32 weight); ``recompute`` drops it and
rebuilds each block from ``θ`` where it is used (:meth:`~lcdsl.operators.base.Operator.
decompress_range`: a codebook lookup for ``quant``, the kept positions for ``prune``); ``auto``
recomputes for operators that build a range of ``Δ(θ)`` without the rest (``op.ranged``) and keeps
it for the others (``lowrank``, whose ``Δ = U·V`` is a product per use). Both modes compute the
same numbers: ``Δ(θ)``'s entries are the same either way, and every use applies the same
elementwise operations to them (``tests/test_memory.py`` checks a run is bit for bit the same).

A block is rows of a parameter as the operator's view orders its axes (``p.permute(order)[r0:r1]``,
a view of the parameter, so in-place updates of ``p.grad`` land in place), together with the same
entries ``start:stop`` of the task's flattened view (where ``λ``, ``Δ(θ)`` and the target lie,
contiguous).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import torch
from torch import nn

from lcdsl.engine.shards import TaskTensors, WholeTensors
from lcdsl.operators.base import Theta, View
from lcdsl.plan.model import Task

__all__ = ["BLOCK_ELEMENTS", "Block", "TaskState", "blocks_of", "keeps_delta", "lambda_dtype", "nbytes"]

BLOCK_ELEMENTS = 2**18
"""Most entries of one block (1 MiB of float32): large enough that the per-block Python cost is
noise beside the arithmetic, small enough that a block's temporaries stay in cache."""

_LAMBDA_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lambda_dtype(setting: str, weights: torch.dtype) -> torch.dtype:
    """The dtype ``λ`` is kept in: the setting's, or the weights' own for ``"weights"``."""
    return weights if setting == "weights" else _LAMBDA_DTYPES[setting]


def keeps_delta(setting: str, task: Task) -> bool:
    """Whether a task keeps ``Δ(θ)`` (``delta = "keep"``, or ``"auto"`` for an operator that can
    only build all of it at once) rather than rebuilding its blocks from ``θ``."""
    if setting == "auto":
        return not getattr(task.operator, "ranged", False)
    return setting == "keep"


def nbytes(t: torch.Tensor | None) -> int:
    """Bytes of a tensor's entries (0 for None)."""
    return 0 if t is None else t.numel() * t.element_size()


@attrs.frozen
class Block:
    """Rows ``rows`` of parameter ``param`` as the view orders its axes: entries ``start:stop`` of
    the task's flattened view."""

    param: int
    """Index of the parameter in the task."""
    start: int
    stop: int
    shape: tuple[int, ...]
    """The block's shape: ``(rows,) + the rest of the seen axes``."""
    seen: Callable[[torch.Tensor], torch.Tensor] = attrs.field(eq=False, repr=False)
    """A parameter-shaped tensor (``p``, ``p.grad``) with its axes in the view's order."""
    rows: slice = attrs.field(eq=False)

    def of_param(self, t: torch.Tensor) -> torch.Tensor:
        """The block's entries of a parameter-shaped tensor: a view of it, of :attr:`shape`."""
        return self.seen(t)[self.rows]

    def of_view(self, v: torch.Tensor) -> torch.Tensor:
        """The block's entries of a contiguous view-shaped tensor (``λ``, ``Δ(θ)``, a target)."""
        return v.view(-1)[self.start : self.stop].view(self.shape)


def _seen(view: View) -> Callable[[torch.Tensor], torch.Tensor]:
    """A parameter-shaped tensor with its axes in the view's order (for one-tensor views)."""
    order = view.order if view.kind != "vector" else None

    def seen(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            return t.reshape(1)
        return t if order is None else t.permute(order)  # (out, in, kernel…)

    return seen


def blocks_of(view: View, limit: int | None = None) -> list[Block]:
    """The blocks of a view, each at most ``limit`` entries (:data:`BLOCK_ELEMENTS` by default;
    one row at least), in view order.

    A vector view runs through its parameters one after the other, each in its own row-major
    order (what ``torch.cat`` of their ``reshape(-1)`` gives); a matrix or tensor view through the
    rows of its one parameter with the axes in the view's order."""
    limit = BLOCK_ELEMENTS if limit is None else limit
    seen = _seen(view)
    blocks: list[Block] = []
    offset = 0
    for index, shape in enumerate(view.shapes):
        axes = shape if view.kind == "vector" or view.order is None else tuple(shape[a] for a in view.order)
        axes = axes or (1,)
        rows, rest = axes[0], math.prod(axes[1:])
        step = max(1, limit // max(rest, 1))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            start, stop = offset + r0 * rest, offset + r1 * rest
            blocks.append(Block(index, start, stop, (r1 - r0,) + tuple(axes[1:]), seen, slice(r0, r1)))
        offset += rows * rest
    return blocks


@attrs.define
class TaskState:
    """A task, its live parameters, and what the engine keeps for it.

    ``Δ(θ)`` and ``λ`` are in the task's *state layout* (:attr:`tensors`): the view's shape for
    whole parameters, this rank's flattened shards for FSDP-sharded ones. Whole tasks work block
    by block; a sharded task always keeps ``Δ(θ)`` (rebuilding a range of it would need the
    whole ``θ`` on every rank anyway) and works on its local shards, which are a rank's share of
    the weights, so already bounded. ``delta`` is None in recompute mode (and before the first
    C step); :meth:`delta_block` gives a block of ``Δ(θ)`` in either mode."""

    task: Task
    params: list[nn.Parameter]
    view: View
    keep_delta: bool = True
    """Whether ``Δ(θ)`` is kept (else rebuilt per block from ``θ``)."""
    lam_dtype: torch.dtype | None = None
    """The dtype of ``λ``; None: the weights'."""
    theta: Theta | None = None
    delta: torch.Tensor | None = None  # Δ(θ), view shape, contiguous, no grad; None when recomputed
    lam: torch.Tensor | None = None  # λ, state layout, contiguous, in lam_dtype
    tensors: TaskTensors = attrs.field(default=attrs.Factory(lambda self: WholeTensors(self.view), takes_self=True))
    """The state layout: whole (the view's shape) or this rank's shards (FSDP)."""
    _blocks: list[Block] | None = attrs.field(default=None, init=False, repr=False)

    @property
    def blocks(self) -> list[Block]:
        """The task's blocks (made once)."""
        if self._blocks is None:
            self._blocks = blocks_of(self.view)
        return self._blocks

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (that of ``Δ(θ)`` and of the C step's target)."""
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        return self.local_params[0].device

    @property
    def local_params(self) -> list[torch.Tensor]:
        """The tensors that hold this rank's numbers of each parameter (the shards when sharded)."""
        return self.tensors.local_params(self.params)

    # ----------------------------------------------------------- state

    def zero_lambda(self) -> None:
        """``λ = 0`` in its dtype, in the state layout."""
        shape = self.view.shape if not self.tensors.sharded else (sum(p.numel() for p in self.local_params),)
        self.lam = torch.zeros(shape, dtype=self.lam_dtype or self.dtype, device=self.device)

    def set_lambda(self, lam: torch.Tensor) -> None:
        """``λ`` from a saved state, moved to the parameters' device and ``λ``'s dtype."""
        self.lam = lam.to(device=self.device, dtype=self.lam_dtype or self.dtype).contiguous()

    def set_theta(self, theta: Theta | None, delta: torch.Tensor | None = None) -> None:
        """A new ``θ`` (and its whole view-shaped ``Δ(θ)``, made here from ``θ`` when not given),
        ``Δ(θ)`` kept in the state layout or dropped to be rebuilt per use."""
        self.theta = theta
        if theta is None or not self.keep_delta:
            self.delta = None
            return
        if delta is None:
            delta = self.task.operator.decompress(theta, self.view.shape)
        self.delta = self.tensors.shard(delta.detach()).contiguous()

    # ------------------------------------------------------- per block

    def delta_block(self, block: Block) -> torch.Tensor:
        """``Δ(θ)``'s entries of ``block``, of the block's shape: a view of the kept ``Δ(θ)``, or
        rebuilt from ``θ`` (a new tensor)."""
        if self.delta is not None:
            return block.of_view(self.delta)
        part = self.task.operator.decompress_range(self.theta, self.view.shape, block.start, block.stop)
        return part.reshape(block.shape)

    def pieces(self) -> Iterator[tuple[Block, torch.Tensor, torch.Tensor]]:
        """``(block, w's block, Δ(θ)'s block)`` for every block."""
        for block in self.blocks:
            yield block, block.of_param(self.params[block.param]), self.delta_block(block)

    def pieces_to_train(self) -> Iterator[tuple[Block, torch.Tensor, torch.Tensor]]:
        """:meth:`pieces` of the parameters that require a gradient (frozen ones are skipped
        without rebuilding their ``Δ(θ)``)."""
        for block in self.blocks:
            param = self.params[block.param]
            if param.requires_grad:
                yield block, block.of_param(param), self.delta_block(block)

    @torch.no_grad()
    def target(self, mu: float, use_lambda: bool) -> torch.Tensor:
        """The C step's target ``w − λ/μ`` (``w`` when not ``use_lambda``), a new contiguous
        view-shaped tensor in the weights' dtype, built block by block: entry for entry the same
        numbers as ``w − λ/μ`` (``λ`` widened to the weights' dtype first, which is exact).
        A sharded task's target is all-gathered from the shards: a collective."""
        if self.tensors.sharded:
            w = self.tensors.local(self.params)
            local = w - self.lam.to(self.dtype) / mu if use_lambda else w.clone()
            return self.tensors.full(local)
        out = torch.empty(self.view.shape, dtype=self.dtype, device=self.device)
        for block in self.blocks:
            w = block.of_param(self.params[block.param])
            part = block.of_view(out)
            if use_lambda:
                part.copy_(block.of_view(self.lam)).div_(mu)  # λ/μ
                torch.sub(w, part, out=part)  # w − λ/μ
            else:
                part.copy_(w)
        return out

    @torch.no_grad()
    def multiplier_step(self, mu: float) -> None:
        """``λ ← λ − μ (w − Δ(θ))`` block by block (one rounding to ``λ``'s dtype per entry)."""
        if self.tensors.sharded:
            self.lam.sub_(torch.sub(self.tensors.local(self.params), self.delta).mul_(mu))
            return
        for block, w, delta in self.pieces():
            step = torch.sub(w, delta).mul_(mu)  # μ (w − Δ), in the weights' dtype
            block.of_view(self.lam).sub_(step)

    @torch.no_grad()
    def distortion(self) -> torch.Tensor:
        """``‖w − Δ(θ)‖²`` as a float64 0-dim tensor on the device (no sync; a sharded task: this
        rank's share)."""
        if self.tensors.sharded:
            return torch.sub(self.tensors.local(self.params), self.delta).double().square().sum()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for _, w, delta in self.pieces():
            total += torch.sub(w, delta).double().square().sum()
        return total

    @torch.no_grad()
    def moved(self, delta: torch.Tensor) -> torch.Tensor | None:
        """``‖delta − Δ(θ)‖²`` for a new whole view-shaped ``delta`` against the current ``Δ(θ)``
        (float64, 0-dim; this rank's share when sharded), block by block; None before any ``θ``."""
        if self.theta is None:
            return None
        if self.tensors.sharded:
            return torch.sub(self.tensors.shard(delta), self.delta).double().square().sum()
        delta = delta.contiguous()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for block in self.blocks:
            total += torch.sub(block.of_view(delta), self.delta_block(block)).double().square().sum()
        return total

    @torch.no_grad()
    def write_delta(self) -> None:
        """``w ← Δ(θ)`` (block by block when ``Δ(θ)`` is not kept)."""
        if self.delta is not None:
            self.tensors.scatter(self.delta, self.params)
            return
        for _, w, delta in self.pieces():
            w.copy_(delta)

    def full_delta(self) -> torch.Tensor:
        """``Δ(θ)`` in the state layout: the kept one, or a new view-shaped one from ``θ``."""
        if self.delta is not None:
            return self.delta
        return self.task.operator.decompress(self.theta, self.view.shape).detach()

    def bytes(self) -> dict[str, int]:
        """Bytes this task keeps: ``λ``, ``Δ(θ)``, ``θ``, and its weights (for the ratio)."""
        return {
            "lambda": nbytes(self.lam),
            "delta": nbytes(self.delta),
            "theta": sum(nbytes(v) for v in (self.theta or {}).values()),
            "weights": sum(nbytes(p) for p in self.params),
        }


def state_bytes(states: list[TaskState], extra: dict[str, Any] | None = None) -> dict[str, int]:
    """Bytes the engine keeps over all tasks, by component, plus ``weights`` (the compressed
    parameters themselves) and whatever ``extra`` counts (the penalty's cached targets)."""
    total = {"lambda": 0, "delta": 0, "theta": 0, "weights": 0}
    for state in states:
        for key, value in state.bytes().items():
            total[key] += value
    total.update(extra or {})
    return total
