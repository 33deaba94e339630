"""The saved model: what every file that holds a compressed model keeps, written and read in one place.

A compressed model is, as plain data (:func:`model_record`)::

    "spec":    the spec's text; loading binds it to the model again to rebuild the operators
    "tasks":   {task name: {"parameters": [names], "shapes": [[…]], "operator": "prune(l0=50)",
                            "plugin": "builtin", "theta": {field: tensor}}}
    "dense":   {parameter name: tensor}   the parameters no task compresses
    "buffers": {buffer name: tensor}      what state_dict keeps besides parameters (BatchNorm's
                                          running_mean, running_var, num_batches_tracked, …)

In ``compressed.pt`` the integer fields of θ (codebook assignments, kept positions, ternary codes)
are bit-packed by the ``.lcz`` codec (:func:`~lcdsl.operators.bitpack.encode_tensor`): each such
field is a ``uint8`` tensor of packed bytes, and the task's ``"packed"`` entry holds its codec
description; floats are kept as they are. So the file is about the size the plan reports, plus
the buffers and ``torch.save``'s framing, while θ in memory (and in ``checkpoint.pt``) keeps each
field in the smallest integer dtype that holds it (``uint8`` assignments, ``int32`` indices).
``compressed.pt`` also keeps ``"probe"``: the compressed model's outputs on a few test inputs
(:mod:`lcdsl.store.probe`), which ``lcdsl export`` checks its file against.

Names are the plan's (a DDP ``module.`` prefix stripped). An operator is named by its spec text
(:func:`~lcdsl.operators.base.describe`) and the plugin that provides it, never by ``repr``, so a
plugin may rename its attributes and still load what it saved. ``compressed.pt`` is this record
with ``"format"`` (:data:`~lcdsl.formats.COMPRESSED_FORMAT`) and ``"model"`` (the model's name on
the command line); ``.lcz`` (:mod:`lcdsl.store.lcz`) encodes the same record compactly. Both read
it back through :func:`restore_model`, which checks everything before it writes a weight.

Format 2 files (θ as in memory, no probe) still load, and so do format 1 files (no buffers;
operators by ``repr``): their operators are checked by ``repr`` as they were saved, and the model's
buffers are left as they are.

:func:`load_compressed` rebuilds a model's weights from ``compressed.pt``::

    model = LeNet300(in_features=64)
    load_compressed(model, "runs/demo/compressed.pt")   # weights are now Δ(θ)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.formats import COMPRESSED_FORMAT
from lcdsl.language.parser import parse
from lcdsl.operators.base import Operator, Theta, check_saved_theta, describe
from lcdsl.operators.bitpack import decode_tensor, encode_tensor
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import buffers_by_name, parameters_by_name
from lcdsl.plugins.origin import operator_plugin
from lcdsl.store.atomic import load_checkpoint

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = [
    "COMPRESSED_FORMAT", "operator_identity", "model_record", "bind_saved_spec", "loading_plan", "check_operator",
    "restore_model",
    "compressed_state", "read_compressed", "load_compressed", "write_theta", "pack_theta", "unpack_theta",
]  # fmt: skip

_READABLE = (1, 2, COMPRESSED_FORMAT)
"""The ``compressed.pt`` formats :func:`read_compressed` accepts."""


def operator_identity(op: Operator, registry: Registry | None = None) -> dict[str, str]:
    """How a saved file names an operator: ``{"operator": spec text, "plugin": entry-point name}``."""
    return {"operator": describe(op), "plugin": operator_plugin(op, registry)}


def model_record(
    model: nn.Module, plan: Plan, thetas: dict[str, Theta], *, spec_text: str, registry: Registry | None = None
) -> dict[str, Any]:
    """The compressed model as plain data and CPU tensors (see the module docstring).

    Args:
        model: the model; its dense parameters and buffers are saved as they are.
        plan: the plan the run compressed with.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`'s result).
        spec_text: the spec's source, so a loader can rebuild the operators.
        registry: where the plan's operators came from (default: the installed plugins).

    Raises:
        ModelError: ``thetas`` lacks a task of ``plan``.
    """
    by_name = parameters_by_name(model)
    tasks = {}
    for task in plan.tasks:
        if task.name not in thetas:
            raise ModelError(f"no θ for task {task.name}")
        tasks[task.name] = {
            "parameters": list(task.parameters),
            "shapes": [list(s) for s in task.shapes],
            **operator_identity(task.operator, registry),
            "theta": {k: v.detach().cpu().clone() for k, v in thetas[task.name].items()},
        }
    dense = {name: by_name[name].detach().cpu().clone() for name in plan.dense}
    buffers = {name: b.detach().cpu().clone() for name, b in buffers_by_name(model).items()}
    return {"spec": spec_text, "tasks": tasks, "dense": dense, "buffers": buffers}


def bind_saved_spec(spec_text: Any, model: nn.Module, *, where: str, registry: Registry | None = None) -> Plan:
    """The plan of a saved spec on ``model`` (spec errors name the file)."""
    if not isinstance(spec_text, str):
        raise ModelError(f"{where}: no saved spec")
    return parse(spec_text, filename=f"{where} (saved spec)").bind(model, registry=registry)


def loading_plan(
    spec_text: Any, model: nn.Module, *, plan: Plan | None, where: str, registry: Registry | None = None
) -> Plan:
    """The plan a loader rebuilds θ with: ``plan`` when the caller gives one, else the saved spec
    bound to ``model`` (:func:`bind_saved_spec`).

    A plan given in code is for what a spec cannot say (a plan built by hand, a budget's Choice
    tasks before the spec language spells them); its tasks' operators are then checked against
    the file's as a saved spec's would be (:func:`check_operator`), and its parameters against
    ``model`` here.

    Raises:
        ModelError: no plan and no saved spec, or a task of ``plan`` names a parameter ``model``
            lacks or has in another shape.
    """
    if plan is None:
        return bind_saved_spec(spec_text, model, where=where, registry=registry)
    params = parameters_by_name(model)
    for task in plan.tasks:
        for name, shape in zip(task.parameters, task.shapes):
            if name not in params or tuple(params[name].shape) != tuple(shape):
                found = "missing" if name not in params else f"of shape {list(params[name].shape)}"
                raise ModelError(
                    f"{where}: the plan given has task {task.name} over parameter '{name}' of shape "
                    f"{list(shape)}, which is {found} in this model"
                )
    return plan


def check_operator(
    task: Task, saved: Any, *, where: str, registry: Registry | None = None, legacy: bool = False
) -> None:
    """Make sure a task's saved entry was made by the operator the saved spec binds to now.

    Args:
        task: the task, bound again from the saved spec.
        saved: the file's entry for it (``None`` when the file has none).
        legacy: a format 1 entry, whose operator is its ``repr``.

    Raises:
        ModelError: the entry is missing or names another operator (or plugin).
    """
    if not isinstance(saved, dict):
        raise ModelError(f"{where}: task {task.name} is missing or was saved with another operator")
    if legacy:
        if saved.get("operator") != repr(task.operator):
            raise ModelError(f"{where}: task {task.name} was saved with another operator ({saved.get('operator')})")
        return
    ours = operator_identity(task.operator, registry)
    theirs = {key: saved.get(key) for key in ours}
    if theirs != ours:
        raise ModelError(
            f"{where}: task {task.name} was saved with another operator ({theirs['operator']} from plugin "
            f"'{theirs['plugin']}'; the saved spec binds {ours['operator']} from plugin '{ours['plugin']}' now)"
        )


@torch.no_grad()
def _checked(task: Task, theta: Any, device: torch.device, where: str) -> tuple[Theta, torch.Tensor]:
    """A θ read from a file, on ``device``, and its ``Δ(θ)`` in the task's view, after
    :func:`~lcdsl.operators.base.check_saved_theta` (named finite tensors the operator accepts,
    e.g. no codebook assignment past k, decompressing to the task's view)."""
    if not isinstance(theta, dict) or not all(isinstance(v, torch.Tensor) for v in theta.values()):
        raise ModelError(f"{where}: θ of task {task.name} is not a dict of named tensors")
    theta = {k: v.to(device) for k, v in theta.items()}
    try:
        return theta, check_saved_theta(task.operator, theta, task.view.shape)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(f"{where}: θ of task {task.name} does not fit the model: {exc}") from exc


@torch.no_grad()
def write_theta(task: Task, params: list[torch.Tensor], theta: Theta, *, where: str) -> Theta:
    """Set a task's parameters to ``Δ(θ)`` of a θ read from a file (checked first, see
    :func:`_checked`); returns ``θ`` on the parameters' device.

    Raises:
        ModelError: ``θ`` is malformed or does not decompress to the task's shape (``where`` names the file).
    """
    theta, delta = _checked(task, theta, params[0].device, where)
    task.view.scatter(delta, params)
    return theta


def _check_tensors(kind: str, saved: dict[str, Any], ours: dict[str, torch.Tensor], expected: Any, where: str) -> None:
    """Saved tensors by name against the model's: the same names, each of the same shape."""
    if set(saved) != set(expected):
        raise ModelError(
            f"{where}: the {kind}s saved ({', '.join(sorted(saved)) or 'none'}) are not those of this model "
            f"({', '.join(expected) or 'none'})"
        )
    for name, value in saved.items():
        if name not in ours or not isinstance(value, torch.Tensor) or ours[name].shape != value.shape:
            raise ModelError(f"{where}: {kind} '{name}' is missing from the model or has another shape")


def restore_model(
    model: nn.Module,
    plan: Plan,
    thetas: dict[str, Theta],
    dense: dict[str, Any],
    buffers: dict[str, Any] | None,
    *,
    where: str,
) -> dict[str, Theta]:
    """Write a saved model into ``model``: ``Δ(θ)`` per task, the dense parameters, the buffers.

    Everything is checked before anything is written: the names and shapes of the dense parameters
    and buffers, and every task's θ (decompressed once, so a load holds Δ(θ) of the compressed
    tensors beside the model for a moment). ``buffers=None`` (a format 1 file) leaves the model's
    buffers as they are.

    Args:
        plan: the saved spec bound to ``model`` (:func:`bind_saved_spec`); every task's operator
            already checked (:func:`check_operator`).
        thetas: ``θ`` by task name, for every task of ``plan``.
        dense: the saved dense parameters by name.
        buffers: the saved buffers by name, or None.
        where: the file, for messages.

    Returns:
        ``θ`` by task name, on the model's device.

    Raises:
        ModelError: something saved does not fit ``model``.
    """
    params, own_buffers = parameters_by_name(model), buffers_by_name(model)
    _check_tensors("dense parameter", dense, params, plan.dense, where)
    if buffers is not None:
        _check_tensors("buffer", buffers, own_buffers, list(own_buffers), where)
    checked = {
        task.name: _checked(task, thetas[task.name], params[task.parameters[0]].device, where) for task in plan.tasks
    }
    with torch.no_grad():
        for task in plan.tasks:
            task.view.scatter(checked[task.name][1], [params[n] for n in task.parameters])
        for name, value in dense.items():
            params[name].copy_(value)
        for name, value in (buffers or {}).items():
            own_buffers[name].copy_(value)
    return {name: theta for name, (theta, _) in checked.items()}


def pack_theta(theta: Theta) -> tuple[Theta, dict[str, dict[str, Any]]]:
    """θ as ``compressed.pt`` stores it: each integer (or boolean) field bit-packed when that is
    smaller, as a ``uint8`` tensor of the codec's bytes; floats as they are.

    Returns:
        The stored fields, and the codec description of each packed one (:func:`unpack_theta`
        inverts it bit for bit)."""
    stored: Theta = {}
    packed: dict[str, dict[str, Any]] = {}
    for key, value in theta.items():
        if not value.is_floating_point() and not value.is_complex() and value.numel():
            meta, data = encode_tensor(value)
            if len(data) < value.numel() * value.element_size():
                empty = torch.empty(0, dtype=torch.uint8)
                stored[key] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else empty
                packed[key] = meta
                continue
        stored[key] = value
    return stored, packed


def unpack_theta(stored: dict[str, Any], packed: Any, *, where: str) -> Theta:
    """The θ that :func:`pack_theta` stored (``packed`` None or empty: stored as it is).

    Raises:
        ModelError: a packed field's bytes do not fit its description."""
    if not packed:
        return dict(stored)
    if not isinstance(packed, dict):
        raise ModelError(f"{where}: damaged packed-field table")
    theta = dict(stored)
    for key, meta in packed.items():
        data = stored.get(key)
        if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or not isinstance(meta, dict):
            raise ModelError(f"{where}: packed field '{key}' is missing or damaged")
        try:
            theta[key] = decode_tensor(meta, data.numpy().tobytes())
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: packed field '{key}': {exc}") from exc
    return theta


def _share_storage(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its tensors of each dtype made views of one flat tensor, in place.

    ``torch.save`` writes a storage once however many views it has, and frames each storage as
    a zip entry of its own (about 200 bytes); a model of many small tensors (BatchNorm's γ, β and
    statistics) would otherwise pay that framing per tensor. Readers see ordinary tensors."""
    slots: list[tuple[Any, Any, torch.Tensor]] = []

    def walk(obj: Any) -> None:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
        for key, value in list(items):
            if isinstance(value, torch.Tensor):
                slots.append((obj, key, value))
            elif isinstance(value, (dict, list)):
                walk(value)

    walk(state)
    groups: dict[torch.dtype, list[tuple[Any, Any, torch.Tensor]]] = {}
    for slot in slots:
        groups.setdefault(slot[2].dtype, []).append(slot)
    for group in groups.values():
        if len(group) < 2:
            continue
        flat = torch.cat([t.detach().cpu().reshape(-1) for _, _, t in group])  # (Σ numel,)
        offset = 0
        for obj, key, t in group:
            obj[key] = flat[offset : offset + t.numel()].view(t.shape)
            offset += t.numel()
    return state


def compressed_state(
    model: nn.Module,
    plan: Plan,
    thetas: dict[str, Theta],
    *,
    spec_text: str,
    model_name: str,
    registry: Registry | None = None,
    probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``compressed.pt`` holds: the format, the model's name and :func:`model_record`, with
    θ's integer fields bit-packed (:func:`pack_theta`) and the tensors of each dtype sharing one
    storage (one zip entry each in the file).

    Args:
        model: the model (its dense parameters and buffers are saved as they are).
        plan: the plan the run compressed with.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`'s result).
        spec_text: the spec's source, so :func:`load_compressed` can rebuild the operators.
        model_name: how the model was named on the command line, for the record.
        registry: where the plan's operators came from (default: the installed plugins).
        probe: the compressed model's outputs on a probe batch
            (:func:`lcdsl.store.probe.probe_outputs`), for ``lcdsl export``'s check.
    """
    record = model_record(model, plan, thetas, spec_text=spec_text, registry=registry)
    for entry in record["tasks"].values():
        entry["theta"], entry["packed"] = pack_theta(entry["theta"])
    state = {"format": COMPRESSED_FORMAT, "model": model_name, **record}
    if probe is not None:
        state["probe"] = dict(probe)
    return _share_storage(state)


def read_compressed(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of ``compressed.pt`` (format 3, 2 or 1), checked to be one; θ as stored
    (packed fields: :func:`unpack_theta`).

    Raises:
        ModelError: the file is missing, damaged, or not a compressed model.
    """
    state = load_checkpoint(path, error=ModelError)
    if state.get("format") not in _READABLE or not isinstance(state.get("tasks"), dict):
        found = state.get("format")
        raise ModelError(
            f"{path}: not an lcdsl compressed model of format {COMPRESSED_FORMAT}, "
            f"nor of the older format 2 or 1 (found {found!r})"
        )
    return state


def load_compressed(
    model: nn.Module, path: str | os.PathLike[str], *, registry: Registry | None = None, plan: Plan | None = None
) -> dict[str, Theta]:
    """Set ``model``'s weights and buffers from ``compressed.pt``: ``Δ(θ)`` per task, the rest as saved.

    The spec saved in the file is bound to ``model`` again to rebuild each task's operator, so
    the model must have the parameters (and shapes) it was compressed with.

    Args:
        model: the architecture; its weights and buffers are overwritten.
        path: the file.
        registry: where the spec's operators come from (default: the installed plugins).
        plan: the plan to read the file with instead of the saved spec bound again (one built
            in code; :func:`loading_plan`).

    Returns:
        ``θ`` by task name.

    Raises:
        ModelError: the file is missing or malformed, or does not fit ``model``.
    """
    state = read_compressed(path)
    where, legacy = str(path), state["format"] == 1
    plan = loading_plan(state.get("spec"), model, plan=plan, where=where, registry=registry)
    thetas = {}
    for task in plan.tasks:
        saved = state["tasks"].get(task.name)
        check_operator(task, saved, where=where, registry=registry, legacy=legacy)
        if not isinstance(saved.get("theta"), dict):
            raise ModelError(f"{where}: task {task.name} has no θ")
        thetas[task.name] = unpack_theta(saved["theta"], saved.get("packed"), where=f"{where}: task {task.name}")
    buffers = None if legacy else state.get("buffers", {})
    return restore_model(model, plan, thetas, dict(state.get("dense", {})), buffers, where=where)
