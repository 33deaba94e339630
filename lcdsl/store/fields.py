"""A compressed model as encoded fields: the one encoding behind ``.lcz`` and ``.safetensors`` files.

Every tensor a compact file holds is a *field*: its codec description (JSON-ready: ``codec``,
``dtype``, ``shape`` and the codec's own numbers) and its bytes. A task's ``θ`` becomes fields
through its operator when the operator implements
:meth:`~lcdsl.operators.base.Operator.encode` (encoder ``"operator"``), else tensor by tensor by
content (encoder ``"generic"``: :func:`lcdsl.operators.bitpack.encode_tensor`: assignments
bit-packed, kept positions as a bitmask or packed indices, ±1 signs as bits, reals as raw
little-endian bytes). Parameters no rule compresses go through the same content codec; the
model's buffers are stored raw (:func:`lcdsl.operators.bitpack.encode_raw`).

:func:`encode_model` does this once for a whole model, with the sizes every export reports;
the ``.lcz`` writer lays the fields' bytes back to back behind a manifest
(:mod:`lcdsl.store.lcz`), the safetensors writer makes each field a tensor
(:mod:`lcdsl.store.safetensors_file`). Reading goes the other way through :func:`decode_field`
and :func:`decode_theta`, which refuse a field that would decode to more values than its tensor
can hold, so a hostile file cannot make a loader allocate without bound.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from lcdsl.errors import LcdslError, ModelError
from lcdsl.operators.base import FLOAT_BITS, Operator, Theta
from lcdsl.operators.bitpack import decode_tensor, encode_raw, encode_tensor
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import parameters_by_name
from lcdsl.plan.summary import plan_summary
from lcdsl.store.model import model_record

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = [
    "ExportSizes", "Field", "EncodedTask", "EncodedModel", "encode_model", "decode_field", "decode_theta",
    "field_limit",
]  # fmt: skip


@attrs.frozen
class ExportSizes:
    """How big a model is, stored four ways (bytes)."""

    dense_bytes: int
    """Every parameter at 32 bits, plus the buffers as they are: what a plain ``state_dict`` of
    floats holds."""
    predicted_bytes: float
    """What the plan reports: ``θ``'s bits (:meth:`Operator.storage`) plus the dense leftovers at
    32 bits, over 8, plus the buffers' bytes."""
    payload_bytes: int
    """The encoded ``θ``, dense leftovers and buffers as written."""
    file_bytes: int
    """The whole file: header, manifest and payload."""
    buffer_bytes: int = 0
    """The model's buffers (BatchNorm's running statistics, …), stored raw: part of each size
    above (of the payload after deflating, if ``deflate``)."""

    @property
    def overhead(self) -> float:
        """``payload / predicted − 1``: how much the encoding costs beyond the reported bits."""
        return self.payload_bytes / self.predicted_bytes - 1.0 if self.predicted_bytes else 0.0


@attrs.frozen
class Field:
    """One stored tensor (or operator-packed bytes): its description and its bytes."""

    meta: dict[str, Any]
    """JSON-ready: ``codec`` (``raw``, ``packed``, ``mask``, ``signs``, ``bool``, or ``bytes`` for
    what an operator packed itself) and, for tensors, ``dtype``, ``shape`` and the codec's numbers."""
    data: bytes
    """The encoded bytes."""


@attrs.frozen
class EncodedTask:
    """One task's identity and its ``θ`` as fields."""

    name: str
    parameters: list[str]
    shapes: list[list[int]]
    operator: str
    """The operator's spec text, amounts resolved (``prune(l0=13310)``)."""
    plugin: str
    """The plugin (entry-point name) that provides the operator."""
    encoder: str
    """``"operator"`` (its own :meth:`~lcdsl.operators.base.Operator.encode`) or ``"generic"``."""
    fields: dict[str, Field]

    def entry(self) -> dict[str, Any]:
        """The task as JSON-ready data, without its fields."""
        return {
            "name": self.name, "parameters": self.parameters, "shapes": self.shapes, "operator": self.operator,
            "plugin": self.plugin, "encoder": self.encoder,
        }  # fmt: skip


@attrs.frozen
class EncodedModel:
    """A compressed model as fields, with its plan summary and sizes."""

    tasks: list[EncodedTask]
    dense: dict[str, Field]
    """The parameters no task compresses, by name (content codec: raw for ordinary floats)."""
    buffers: dict[str, Field]
    """The model's buffers by name, raw."""
    plan: dict[str, Any]
    """:func:`~lcdsl.plan.summary.plan_summary` with the real size of each task's ``θ``."""
    dense_bytes: int
    """Every parameter at 32 bits, plus the buffers as they are."""
    predicted_bytes: float
    """The plan's bits over 8 (θ per :meth:`Operator.storage`, dense leftovers at 32 bits), plus
    the buffers' bytes."""
    buffer_bytes: int

    def all_fields(self) -> list[Field]:
        """Every field, tasks first, then the dense parameters, then the buffers."""
        return [f for t in self.tasks for f in t.fields.values()] + [*self.dense.values(), *self.buffers.values()]

    @property
    def payload_bytes(self) -> int:
        """The fields' bytes together."""
        return sum(len(f.data) for f in self.all_fields())


def _encode_theta(task: Task, theta: Theta) -> tuple[str, dict[str, Field]]:
    """A task's encoder and ``θ`` as fields."""
    op = task.operator
    given = op.encode(theta, task.view_shape)
    encoder = "generic" if given is None else "operator"
    fields: dict[str, Field] = {}
    for key, value in (theta if given is None else given).items():
        if isinstance(value, (bytes, bytearray)):
            fields[key] = Field({"codec": "bytes"}, bytes(value))
        elif isinstance(value, torch.Tensor):
            fields[key] = Field(*encode_tensor(value))
        else:
            raise ModelError(f"{type(op).__name__}.encode gave field '{key}' of type {type(value).__name__}, "
                             "expected bytes or a tensor")  # fmt: skip
    return encoder, fields


def encode_model(
    model: nn.Module, plan: Plan, thetas: dict[str, Theta], *, spec_text: str, registry: Registry | None = None
) -> EncodedModel:
    """``θ`` of every task of ``plan``, ``model``'s dense parameters and its buffers as fields.

    Raises:
        ModelError: ``thetas`` lacks a task, or an operator's ``encode`` gives a bad field.
    """
    record = model_record(model, plan, thetas, spec_text=spec_text, registry=registry)
    tasks, storages = [], []
    for task in plan.tasks:
        saved = record["tasks"][task.name]
        encoder, fields = _encode_theta(task, saved["theta"])
        tasks.append(EncodedTask(task.name, saved["parameters"], saved["shapes"], saved["operator"], saved["plugin"],
                                 encoder, fields))  # fmt: skip
        storages.append(task.operator.storage(task.view_shape, saved["theta"]))
    dense = {name: Field(*encode_tensor(value)) for name, value in record["dense"].items()}
    buffers = {name: Field(*encode_raw(value)) for name, value in record["buffers"].items()}
    buffer_bytes = sum(len(f.data) for f in buffers.values())
    summary = plan_summary(plan, storages)
    total_params = sum(p.numel() for p in parameters_by_name(model).values())
    bits = summary["bits_after"]
    return EncodedModel(
        tasks=tasks, dense=dense, buffers=buffers, plan=summary,
        dense_bytes=total_params * FLOAT_BITS // 8 + buffer_bytes,
        predicted_bytes=bits / 8 + buffer_bytes if bits is not None else float("nan"),
        buffer_bytes=buffer_bytes,
    )  # fmt: skip


def field_limit(values: int) -> int:
    """The most values one field restoring a tensor of ``values`` numbers may decode to.

    A field holds at most about its tensor's numbers (low-rank factors, kept values, assignments);
    twice that, plus room for codebooks and scalars of tiny tensors, leaves every real operator
    free and keeps a hostile file from asking for more memory than the model has."""
    return 2 * values + 4096


def decode_field(meta: Any, data: bytes, *, where: str, limit: int) -> torch.Tensor | bytes:
    """The tensor (or operator-packed bytes) a field's description and bytes stand for.

    Args:
        meta: the field's description as read from a file.
        data: its bytes.
        where: the file and field, for messages.
        limit: the most values it may decode to (:func:`field_limit`).

    Raises:
        ModelError: the description is malformed, promises more than ``limit`` values, or does not
            fit the bytes.
    """
    if not isinstance(meta, dict):
        raise ModelError(f"{where}: damaged description: {type(meta).__name__}, not a dict")
    if meta.get("codec") == "bytes":
        return data
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):  # fmt: skip
        raise ModelError(f"{where}: damaged description: shape {shape!r} is not a list of sizes")
    if len(shape) > 16 or math.prod(shape) > limit:
        raise ModelError(f"{where}: shape {shape} holds more values than the tensor it restores can ({limit:,})")
    try:
        return decode_tensor(meta, data)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"{where}: {exc}") from exc


def decode_theta(op: Operator, encoder: Any, fields: dict[str, torch.Tensor | bytes], shape: tuple[int, ...],
                 where: str) -> Theta:  # fmt: skip
    """A task's ``θ`` from its decoded fields: as they are (``"generic"``), or through the
    operator's :meth:`~lcdsl.operators.base.Operator.decode` (``"operator"``).

    Raises:
        ModelError: the operator's decode fails (``where`` names the file and task).
    """
    if encoder != "operator":
        return fields  # type: ignore[return-value]
    try:
        return op.decode(fields, shape)
    except LcdslError:
        raise
    except Exception as exc:  # a plugin's decode may raise anything on bad bytes
        raise ModelError(f"{where}: {type(op).__name__}.decode failed: {exc}") from exc
