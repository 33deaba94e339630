"""Names: parameters and buffers as a plan calls them (DDP prefixes stripped) and tasks' names. A leaf."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["strip_ddp_prefix", "task_name", "parameters_by_name", "buffers_by_name"]


def strip_ddp_prefix(name: str) -> str:
    """A parameter name without the ``module.`` prefix DDP/DataParallel wrappers add."""
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


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
    """``model``'s parameters by name, ``module.`` prefixes of DDP wrappers stripped (the
    names a plan uses)."""
    return {strip_ddp_prefix(n): p for n, p in model.named_parameters()}


def buffers_by_name(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s buffers that its ``state_dict`` keeps (BatchNorm's running statistics and
    ``num_batches_tracked``, …) by name, ``module.`` prefixes stripped as in
    :func:`parameters_by_name`. Buffers registered with ``persistent=False`` are left out, as
    ``state_dict`` leaves them out."""
    kept = model.state_dict(keep_vars=True).keys()
    return {strip_ddp_prefix(n): b for n, b in model.named_buffers() if n in kept}
