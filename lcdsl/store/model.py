"""The compressed model as ``compressed.pt``: θ per task, the dense parameters, and the spec.

:func:`load_compressed` rebuilds a model's weights from it::

    model = LeNet300(in_features=64)
    load_compressed(model, "runs/demo/compressed.pt")   # weights are now Δ(θ)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.language.parser import parse
from lcdsl.operators.base import Theta
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import parameters_by_name
from lcdsl.store.atomic import load_checkpoint

__all__ = ["COMPRESSED_FORMAT", "compressed_state", "load_compressed", "write_theta"]

COMPRESSED_FORMAT = 1
"""Version of the ``compressed.pt`` layout."""



def compressed_state(
    model: nn.Module, plan: Plan, thetas: dict[str, Theta], *, spec_text: str, model_name: str
) -> dict[str, Any]:
    """What ``compressed.pt`` holds: ``θ`` per task, the dense parameters, and the spec.

    Args:
        model: the model (its dense parameters are saved as they are).
        plan: the plan the run compressed with.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`'s result).
        spec_text: the spec's source, so :func:`load_compressed` can rebuild the operators.
        model_name: how the model was named on the command line, for the record.
    """
    by_name = parameters_by_name(model)
    tasks = {}
    for task in plan.tasks:
        tasks[task.name] = {
            "parameters": list(task.parameters),
            "shapes": [list(s) for s in task.shapes],
            "operator": repr(task.operator),
            "theta": {k: v.detach().cpu().clone() for k, v in thetas[task.name].items()},
        }
    dense = {name: by_name[name].detach().cpu().clone() for name in plan.dense}
    return {"format": COMPRESSED_FORMAT, "model": model_name, "spec": spec_text, "tasks": tasks, "dense": dense}


@torch.no_grad()
def write_theta(task: Task, params: list[torch.Tensor], theta: Theta, *, where: str) -> Theta:
    """Set a task's parameters to ``Δ(θ)``; returns ``θ`` on the parameters' device.

    Raises:
        ModelError: ``θ`` does not decompress to the task's shape (``where`` names the file).
    """
    theta = {k: v.to(params[0].device) for k, v in theta.items()}
    try:
        view = task.view
        view.scatter(task.operator.decompress(theta, view.shape), params)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(f"{where}: θ of task {task.name} does not fit the model: {exc}") from exc
    return theta


def load_compressed(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Theta]:
    """Set ``model``'s weights from ``compressed.pt``: ``Δ(θ)`` per task, dense ones as saved.

    The spec saved in the file is bound to ``model`` again to rebuild each task's operator, so
    the model must have the parameters (and shapes) it was compressed with.

    Returns:
        ``θ`` by task name.

    Raises:
        ModelError: the file is missing or malformed, or does not fit ``model``.
    """
    state = load_checkpoint(path, error=ModelError)
    if state.get("format") != COMPRESSED_FORMAT or not isinstance(state.get("tasks"), dict):
        raise ModelError(f"{path}: not an lcdsl compressed model of format {COMPRESSED_FORMAT}")
    plan = parse(state["spec"], filename=f"{path} (saved spec)").bind(model)
    by_name = parameters_by_name(model)
    thetas: dict[str, Theta] = {}
    with torch.no_grad():
        for task in plan.tasks:
            saved = state["tasks"].get(task.name)
            if saved is None or saved.get("operator") != repr(task.operator):
                raise ModelError(f"{path}: task {task.name} is missing or was saved with another operator")
            params = [by_name[name] for name in task.parameters]
            thetas[task.name] = write_theta(task, params, saved["theta"], where=str(path))
        for name, value in state.get("dense", {}).items():
            if name not in by_name or tuple(by_name[name].shape) != tuple(value.shape):
                raise ModelError(f"{path}: dense parameter '{name}' is missing from the model or has another shape")
            by_name[name].copy_(value)
    return thetas
