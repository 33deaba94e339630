"""The LC engine under ``torchrun``: helpers to keep every rank's LC state the same, and to check it.

Under DDP every rank holds the same ``w`` after each optimizer step (the gradients are
all-reduced), and the C steps are deterministic, so every rank computes the same ``θ`` with no
communication: build the :class:`~lcdsl.engine.Engine` on the DDP-wrapped model on every rank and
drive it as in one process. Two things can still split the ranks apart: an operator or a device
whose results are not bit-reproducible (some GPU kernels), and a bug. For those:

- :func:`broadcast_state` makes every rank adopt one rank's ``θ``, ``Δ(θ)``, ``λ``, ``μ`` and step;
- :func:`sync_engine` does that after every C step of a run (or only checks);
- :func:`check_same` measures how far each rank's weights and ``θ`` are from one rank's, and
  raises naming the first tensor that differs.

Every function is a no-op (or returns 0) without an initialised process group, so the same
script runs with and without ``torchrun``.

:func:`share_c_steps` (opt-in) makes the ranks share the C steps instead of each repeating
them all: each task is solved by one rank, chosen by cost, and its ``θ`` and ``Δ(θ)`` are
broadcast (:mod:`lcdsl.engine.sharing`). Every rank still ends each C step with the bits one
process computes. FSDP2-sharded parameters (``fully_shard``) need nothing more: the engine keeps
their ``Δ(θ)`` and ``λ`` as local shards (:mod:`lcdsl.engine.shards`) and gathers a task's
whole tensor only for its C step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.shards import is_sharded
from lcdsl.engine.sharing import SharedCSteps
from lcdsl.errors import EngineError
from lcdsl.plan.names import unwrap

__all__ = ["broadcast_state", "check_same", "rank_and_world", "share_c_steps", "sync_engine"]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_state(engine: Engine, src: int = 0) -> None:
    """Every rank takes rank ``src``'s LC state (``θ``, ``λ``, ``μ``, step, history).

    The state travels as one pickled object (``broadcast_object_list``): fine for the ranks of
    one job, which trust each other. The model's weights are not touched (DDP keeps them equal).

    Raises:
        EngineError: the state of ``src`` does not fit this rank's plan.
    """
    rank, world = rank_and_world()
    if world == 1:
        return
    state = engine.state_dict()  # on every rank: for sharded tasks it all-gathers λ
    box = [state if rank == src else None]
    dist.broadcast_object_list(box, src=src)
    if rank != src:
        engine.load_state_dict(box[0])


def share_c_steps(engine: Engine) -> SharedCSteps:
    """From the next C step on, each of ``engine``'s tasks is solved by one rank and its ``θ``
    and ``Δ(θ)`` broadcast to the others. Call it on every rank, after building the engine.

    Returns:
        The sharing: ``.owners`` (the rank solving each task, in plan order) and ``.costs``.

    Raises:
        EngineError: the ranks' engines were built for different plans.
    """
    rank, world = rank_and_world()
    if world > 1:
        fingerprints: list[str | None] = [None] * world
        dist.all_gather_object(fingerprints, engine.fingerprint)
        if len(set(fingerprints)) != 1:
            raise EngineError("cannot share C steps: the ranks' engines were built for different plans")
    sharing = SharedCSteps(engine.tasks, rank, world)
    engine.c_step_sharing = sharing
    return sharing


def _named_tensors(model: nn.Module, engine: Engine | None) -> Iterator[tuple[str, torch.Tensor]]:
    for name, p in unwrap(model).named_parameters():
        if not is_sharded(p):  # a shard differs between ranks by design
            yield name, p.detach()
    if engine is not None:
        for task, theta in engine.thetas.items():
            for key in sorted(theta):
                yield f"θ[{task}].{key}", theta[key].detach()


def check_same(model: nn.Module, engine: Engine | None = None, *, src: int = 0, atol: float = 0.0) -> float:
    """The largest ``|x − x_src|`` over the model's parameters (and ``engine``'s ``θ``) across ranks.

    Call it on every rank at the same point (it is collective).

    Returns:
        The largest difference (0.0 in one process).

    Raises:
        EngineError: some rank's tensor differs from rank ``src``'s by more than ``atol``, or
            has another shape; the message names the tensor and the difference.
    """
    rank, world = rank_and_world()
    if world == 1:
        return 0.0
    named = list(_named_tensors(model, engine))
    shapes = [(name, tuple(t.shape)) for name, t in named]
    gathered: list[list[tuple[str, tuple[int, ...]]] | None] = [None] * world
    dist.all_gather_object(gathered, shapes)
    for other, theirs in enumerate(gathered):
        if theirs != shapes:
            diff = next((a for a, b in zip(theirs or [], shapes) if a != b), None)
            raise EngineError(
                f"rank {other} and rank {rank} hold different tensors"
                + (f" (rank {other}: {diff[0]} {diff[1]})" if diff else " (another count)")
            )
    diffs = []
    for _, t in named:
        mine = t.to(torch.float64)  # exact for float32 and int32 values; comparable across dtypes
        theirs = mine.clone()
        dist.broadcast(theirs, src=src)
        diffs.append((mine - theirs).abs().max() if mine.numel() else mine.new_zeros(()))
    worst = torch.stack(diffs) if diffs else torch.zeros(1, dtype=torch.float64)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # (tensors,): the worst rank for each tensor
    largest = float(worst.max())
    if largest > atol:
        index = int((worst > atol).nonzero()[0])
        raise EngineError(
            f"ranks disagree on {named[index][0]}: it differs from rank {src}'s by {float(worst[index]):.3g} "
            f"(tolerance {atol:g})"
        )
    return largest


def sync_engine(engine: Engine, mode: Literal["broadcast", "check"] = "broadcast", *, src: int = 0) -> None:
    """After direct compression and after every C step of :meth:`Engine.run` (or of a trainer
    callback), make every rank take rank ``src``'s LC state (``"broadcast"``), or check that they
    agree exactly (``"check"``, raising :class:`~lcdsl.errors.EngineError` if not).

    Raises:
        EngineError: ``mode`` is unknown.
    """
    if mode not in ("broadcast", "check"):
        raise EngineError(f"mode must be 'broadcast' or 'check', got {mode!r}")

    def after_c_step(engine: Engine, **_: object) -> None:
        if mode == "broadcast":
            broadcast_state(engine, src=src)
        else:
            check_same(engine.model, engine, src=src)

    engine.events.on("direct_compression", after_c_step)
    engine.events.on("c_step_end", after_c_step)
