"""Checkpoints of a sharded (FSDP2) run: every rank writes its shards, any world size reads them.

A checkpoint folder holds:

- ``manifest.pt`` (rank 0, written atomically and last): format :data:`~lcdsl.formats.SHARDED_FORMAT`,
  the engine state without ``λ`` (step, μ, θ of every task, which every rank holds whole, the
  history and the plan's fingerprint), the world size that wrote it, and the name of its data
  folder;
- ``data-S/`` (``S`` the LC step): a ``torch.distributed.checkpoint`` folder with the model's
  state dict and every task's ``λ`` as one tensor a parameter. Each rank writes only its own
  shards; on load, ``torch.distributed.checkpoint`` reads for each rank the part of every tensor
  that rank holds now, so a checkpoint of 2 ranks resumes on 1, 2 or 4.

A crash while saving leaves the previous manifest, which names the previous data folder: that
checkpoint stays whole. Older data folders are removed once the new manifest is in place::

    save_sharded("run/ckpt", model, engine)          # on every rank (collective)
    ...
    load_sharded("run/ckpt", model, engine)          # on every rank, after fully_shard
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.engine.distributed import rank_and_world
from lcdsl.errors import EngineError
from lcdsl.formats import SHARDED_FORMAT
from lcdsl.plan.names import parameters_by_name
from lcdsl.store.atomic import load_checkpoint, save_atomic

__all__ = ["SHARDED_FORMAT", "MANIFEST", "save_sharded", "load_sharded"]

MANIFEST = "manifest.pt"
"""The file of a sharded checkpoint folder that says what the checkpoint is."""


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _lambda_tensors(lambdas: dict[str, list[torch.Tensor]], engine: Engine) -> dict[str, dict[str, torch.Tensor]]:
    """``λ`` by task index and parameter index (task names hold dots, which a checkpoint key joins on)."""
    return {
        str(index): {str(i): piece for i, piece in enumerate(lambdas[task.name])}
        for index, task in enumerate(engine.tasks)
        if task.name in lambdas
    }


def save_sharded(folder: str | os.PathLike[str], model: nn.Module, engine: Engine) -> Path:
    """Write the model's and the engine's state to ``folder`` (collective: call it on every rank).

    Returns:
        The manifest's path.

    Raises:
        EngineError: a file cannot be written.
    """
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    folder = Path(folder)
    rank, world = rank_and_world()
    state = engine.state_dict(shards=True)
    lambdas = state.pop("lambdas")
    data = f"data-{engine.step}"
    tensors = {"model": get_model_state_dict(model), "lambdas": _lambda_tensors(lambdas, engine)}
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(folder / data, ignore_errors=True)  # a leftover of a crashed save of this step
    _barrier()
    try:
        dcp.save(tensors, checkpoint_id=folder / data)
    except Exception as exc:  # OSError and the planner's errors: the data folder is incomplete
        raise EngineError(f"cannot write the sharded checkpoint {folder / data}: {exc}") from exc
    _barrier()  # every rank's shards are on disk before the manifest names them
    if rank == 0:
        manifest = {
            "format": SHARDED_FORMAT,
            "data": data,
            "world_size": world,
            "engine": state,
            "lambda_tasks": [task.name for task in engine.tasks if task.name in lambdas],
        }
        save_atomic(manifest, folder / MANIFEST)
        for old in folder.glob("data-*"):
            if old.name != data and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return folder / MANIFEST


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a sharded checkpoint folder, checked.

    Raises:
        EngineError: no manifest, another format, or its data folder is missing.
    """
    folder = Path(folder)
    manifest = load_checkpoint(folder / MANIFEST)
    if manifest.get("format") != SHARDED_FORMAT:
        raise EngineError(
            f"{folder / MANIFEST}: not a sharded lcdsl checkpoint of format {SHARDED_FORMAT} "
            f"(found {manifest.get('format')!r})"
        )
    data = manifest.get("data")
    if not isinstance(data, str) or not (folder / data).is_dir():
        raise EngineError(f"{folder / MANIFEST}: its data folder {data!r} is missing")
    if not isinstance(manifest.get("engine"), dict) or not isinstance(manifest.get("lambda_tasks"), list):
        raise EngineError(f"{folder / MANIFEST}: malformed (no engine state)")
    return manifest


def load_sharded(folder: str | os.PathLike[str], model: nn.Module, engine: Engine) -> dict[str, Any]:
    """Restore what :func:`save_sharded` wrote into ``model`` and ``engine``, on this job's
    world size and sharding (collective: call it on every rank, after ``fully_shard``).

    Returns:
        The manifest (``world_size`` is the one that wrote it).

    Raises:
        EngineError: the folder is not a sharded checkpoint, or not of this plan.
    """
    from torch.distributed import checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    folder = Path(folder)
    manifest = read_manifest(folder)
    engine._check_compatible(manifest["engine"])  # another plan: say what differs before reading tensors
    names = set(manifest["lambda_tasks"])
    by_name = parameters_by_name(model)
    # what to read, shaped and sharded as this job holds it: DCP fills it in place
    lambdas = {
        str(index): {str(i): torch.zeros_like(by_name[name]) for i, name in enumerate(task.parameters)}
        for index, task in enumerate(engine.tasks)
        if task.name in names
    }
    tensors = {"model": get_model_state_dict(model), "lambdas": lambdas}
    try:
        dcp.load(tensors, checkpoint_id=folder / manifest["data"])
    except Exception as exc:  # missing keys, shapes of another model, damaged files
        raise EngineError(f"cannot read the sharded checkpoint {folder / manifest['data']}: {exc}") from exc
    set_model_state_dict(model, tensors["model"])
    state = dict(manifest["engine"])
    state["lambdas"] = {
        task.name: [lambdas[str(index)][str(i)] for i in range(len(task.parameters))]
        for index, task in enumerate(engine.tasks)
        if task.name in names
    }
    engine.load_state_dict(state)
    return manifest
