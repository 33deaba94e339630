"""Names: parameters as a plan calls them (DDP prefixes stripped) and tasks' names. A leaf."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["strip_ddp_prefix", "task_name", "parameters_by_name"]


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
