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


def task_name(parameters: Sequence[str], joint: bool) -> str:
    """A task's name: its parameter, or ``[a, b, …]`` for a joint group."""
    return "[" + ", ".join(parameters) + "]" if joint else parameters[0]


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
