"""Names: parameters and buffers as a plan calls them and tasks' names. A leaf.

A plan names a model's tensors as the model itself names them. A wrapper that holds the real
model (``DistributedDataParallel``, ``DataParallel``, FSDP's ``FullyShardedDataParallel``,
``torch.compile``'s ``OptimizedModule``) adds a prefix (``module.``, ``_orig_mod.``) to every
name; :func:`unwrap` takes the model out of such wrappers, and every name a plan, the engine,
the store or :mod:`lcdsl.deploy` uses comes from the unwrapped model. Nothing is stripped from
a model that is not such a wrapper: its ``module.fc`` and ``fc`` stay two tensors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["unwrap", "strip_ddp_prefix", "task_name", "parameters_by_name", "buffers_by_name"]


def _wrapped(model: nn.Module) -> nn.Module | None:
    """The model ``model`` wraps, when it is a wrapper that only prefixes names; else None."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    # FSDP and torch.compile are checked only when loaded: a model wrapped by them imported them
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is not None and isinstance(model, getattr(fsdp, "FullyShardedDataParallel", ())):
        return model.module
    frame = sys.modules.get("torch._dynamo.eval_frame")
    if frame is not None and isinstance(model, getattr(frame, "OptimizedModule", ())):
        return model._orig_mod
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The real model inside DDP/DataParallel/FSDP/``torch.compile`` wrappers (``model`` itself
    when it is none of these): the model whose names a plan uses."""
    while (inner := _wrapped(model)) is not None:
        model = inner
    return model


def strip_ddp_prefix(name: str) -> str:
    """A name from a ``DistributedDataParallel``/``DataParallel`` wrapper's ``state_dict`` or
    ``named_parameters`` without the one ``module.`` prefix the wrapper added. Only for names
    known to come from such a wrapper; with the model at hand, name from :func:`unwrap` instead."""
    return name[len("module.") :] if name.startswith("module.") else name


MAX_LISTED = 3
"""The most members a joint task's generated name lists in full."""


def task_name(parameters: Sequence[str], joint: bool, label: str | None = None) -> str:
    """A task's name: the name given to its group (``[fc*] as body`` → ``body``), else its
    parameter, or for a joint group ``[a, b, c]`` (up to :data:`MAX_LISTED` members) or
    ``[a, …, z] (16 tensors)`` (the first and last in model order: no two tasks share a tensor,
    so the name is unique)."""
    if label is not None:
        return label
    if not joint:
        return parameters[0]
    if len(parameters) <= MAX_LISTED:
        return "[" + ", ".join(parameters) + "]"
    return f"[{parameters[0]}, …, {parameters[-1]}] ({len(parameters)} tensors)"


def parameters_by_name(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """``model``'s parameters by name, as the model inside any DDP/``torch.compile`` wrapper
    names them (:func:`unwrap`): the names a plan uses."""
    return dict(unwrap(model).named_parameters())


def buffers_by_name(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s buffers that its ``state_dict`` keeps (BatchNorm's running statistics and
    ``num_batches_tracked``, …) by name, named from the unwrapped model as in
    :func:`parameters_by_name`. Buffers registered with ``persistent=False`` are left out, as
    ``state_dict`` leaves them out."""
    model = unwrap(model)
    kept = model.state_dict(keep_vars=True).keys()
    return {n: b for n, b in model.named_buffers() if n in kept}
