"""Compact export: a compressed model as one ``.lcz`` file, and loading it back.

A ``.lcz`` file is one binary, readable without unpickling anything::

    b"LCZ1"                      4 bytes, the magic and layout version
    manifest length              4 bytes, unsigned little-endian
    manifest                     zlib-deflated UTF-8 JSON: spec text, resolved plan, sizes, versions, and for
                                 every field of every θ and dense tensor: codec, dtype, shape,
                                 offset and length into the payload
    payload                      the fields' bytes, back to back

Each task's ``θ`` is encoded by its operator when the operator implements
:meth:`~lcdsl.operators.base.Operator.encode`, else tensor by tensor by content
(:func:`lcdsl.bitpack.encode_tensor`: assignments bit-packed, kept positions as a bitmask or
packed indices, reals as raw little-endian bytes). Parameters no rule compresses are stored raw.
So the payload is the bits the plan reports (:meth:`Operator.storage`) plus the dense leftovers,
rounded up to whole bytes per field. The manifest is deflated (for LeNet300 its JSON takes
2.7 kB plain, 0.9 kB deflated). The payload is stored as it is by default, so its size is the
reported one; ``deflate=True`` deflates each field where that helps (measured on LeNet300:
−0.2% for 1-bit codebooks, −7 to −10% for raw floats, −19% for ternary codes), at the price of
sizes that no longer match the plan's bits.

Loading needs the model's architecture: ``load_lcz(path, model)`` binds the saved spec to
``model`` again and writes ``Δ(θ)`` into its weights::

    model = LeNet300(in_features=64)
    thetas = load_lcz("model.lcz", model)      # weights are now Δ(θ)
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from lcdsl.errors import LcdslError, ModelError
from lcdsl.language.parser import parse
from lcdsl.operators.base import FLOAT_BITS, Operator, Theta
from lcdsl.operators.bitpack import decode_tensor, encode_tensor
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.names import parameters_by_name
from lcdsl.plan.summary import plan_summary
from lcdsl.plugins.origin import versions
from lcdsl.store.atomic import write_atomic
from lcdsl.store.model import write_theta

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = ["MAGIC", "LCZ_FORMAT", "ExportSizes", "export_model", "read_manifest", "load_lcz"]

MAGIC = b"LCZ1"
"""The first four bytes of every ``.lcz`` file."""

LCZ_FORMAT = 1
"""Version of the manifest's layout."""

_HEADER = struct.Struct("<4sI")  # magic, manifest length


@attrs.frozen
class ExportSizes:
    """How big a model is, stored four ways (bytes)."""

    dense_bytes: int
    """Every parameter at 32 bits: what a plain ``state_dict`` of floats holds."""
    predicted_bytes: float
    """What the plan reports: ``θ``'s bits (:meth:`Operator.storage`) plus the dense leftovers at
    32 bits, over 8."""
    payload_bytes: int
    """The encoded ``θ`` and dense leftovers as written."""
    file_bytes: int
    """The whole file: header, manifest and payload."""

    @property
    def overhead(self) -> float:
        """``payload / predicted − 1``: how much the encoding costs beyond the reported bits."""
        return self.payload_bytes / self.predicted_bytes - 1.0 if self.predicted_bytes else 0.0


class _Payload:
    """Collects fields' bytes and records where each one lands."""

    def __init__(self, deflate: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.deflate = deflate

    def add(self, meta: dict[str, Any], data: bytes) -> dict[str, Any]:
        entry = dict(meta)
        if self.deflate:
            packed = zlib.compress(data, 9)
            if len(packed) < len(data):
                data, entry["deflated"] = packed, True
        self.chunks.append(data)
        entry.update(offset=self.size, length=len(data))
        self.size += len(data)
        return entry

    def tensor(self, tensor: torch.Tensor) -> dict[str, Any]:
        return self.add(*encode_tensor(tensor))


def _encode_task(task: Task, theta: Theta, payload: _Payload) -> dict[str, Any]:
    op = task.operator
    fields = op.encode(theta, task.view_shape)
    encoder = "generic" if fields is None else "operator"
    if fields is None:
        fields = theta
    entries = {}
    for key, value in fields.items():
        if isinstance(value, (bytes, bytearray)):
            entries[key] = payload.add({"codec": "bytes"}, bytes(value))
        elif isinstance(value, torch.Tensor):
            entries[key] = payload.tensor(value)
        else:
            raise ModelError(f"{type(op).__name__}.encode gave field '{key}' of type {type(value).__name__}, "
                             "expected bytes or a tensor")  # fmt: skip
    return {
        "name": task.name,
        "parameters": list(task.parameters),
        "shapes": [list(s) for s in task.shapes],
        "operator": repr(op),
        "encoder": encoder,
        "fields": entries,
    }


def export_model(
    model: nn.Module,
    plan: Plan,
    thetas: dict[str, Theta],
    path: str | os.PathLike[str],
    *,
    spec_text: str,
    model_name: str = "",
    extra: dict[str, Any] | None = None,
    deflate: bool = False,
) -> ExportSizes:
    """Write ``θ`` of every task of ``plan`` and ``model``'s dense parameters to a ``.lcz`` file.

    Args:
        model: the model (only its parameters that no task compresses are read).
        plan: the plan ``thetas`` were computed for.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`, :func:`load_compressed`).
        path: the file to write (atomically).
        spec_text: the spec's source; :func:`load_lcz` binds it again.
        model_name: how the model is named (``lenet300``, ``pkg.mod:factory``), for the record.
        extra: more JSON-ready entries for the manifest (e.g. ``{"deploy": true}``).
        deflate: deflate each field where that makes it smaller (the payload then no longer
            matches the plan's bits).

    Returns:
        The sizes; they are in the manifest too.

    Raises:
        ModelError: ``thetas`` lacks a task, or an operator's ``encode`` gives a bad field.
    """
    by_name = parameters_by_name(model)
    payload = _Payload(deflate)
    tasks, storages = [], []
    for task in plan.tasks:
        if task.name not in thetas:
            raise ModelError(f"no θ for task {task.name}")
        theta = {k: v.detach().cpu() for k, v in thetas[task.name].items()}
        tasks.append(_encode_task(task, theta, payload))
        storages.append(task.operator.storage(task.view_shape, theta))
    dense = {name: payload.tensor(by_name[name].detach().cpu()) for name in plan.dense}
    summary = plan_summary(plan, storages)
    total_params = sum(p.numel() for p in by_name.values())
    predicted = summary["bits_after"] / 8 if summary["bits_after"] is not None else float("nan")
    sizes = {"dense_bytes": total_params * FLOAT_BITS // 8, "predicted_bytes": predicted, "payload_bytes": payload.size}
    manifest = {
        "format": LCZ_FORMAT,
        "model": model_name,
        "spec": spec_text,
        "plan": summary,
        "tasks": tasks,
        "dense": dense,
        "sizes": sizes,
        "versions": versions(),
        **(extra or {}),
    }
    head = zlib.compress(json.dumps(manifest, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)
    chunks = [_HEADER.pack(MAGIC, len(head)), head, *payload.chunks]

    def write(fh: Any) -> None:
        for chunk in chunks:
            fh.write(chunk)

    write_atomic(path, write)
    return ExportSizes(file_bytes=_HEADER.size + len(head) + payload.size, **sizes)


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], memoryview]:
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    if len(blob) < _HEADER.size:
        raise ModelError(f"{path}: not an .lcz file (too short)")
    magic, length = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ModelError(f"{path}: not an .lcz file (it starts with {magic!r}, not {MAGIC!r})")
    if _HEADER.size + length > len(blob):
        raise ModelError(f"{path}: truncated (the manifest runs past the end of the file)")
    try:
        manifest = json.loads(zlib.decompress(blob[_HEADER.size : _HEADER.size + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, zlib.error) as exc:
        raise ModelError(f"{path}: damaged manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != LCZ_FORMAT:
        raise ModelError(f"{path}: not an .lcz manifest of format {LCZ_FORMAT}")
    return manifest, memoryview(blob)[_HEADER.size + length :]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a ``.lcz`` file (spec, plan, sizes, versions, field table).

    Raises:
        ModelError: the file is missing, not an ``.lcz`` file, or damaged.
    """
    return _read(path)[0]


def _field(entry: dict[str, Any], payload: memoryview, where: str) -> torch.Tensor | bytes:
    try:
        offset, length = int(entry["offset"]), int(entry["length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: no offset or length") from exc
    if offset < 0 or length < 0 or offset + length > len(payload):
        raise ModelError(f"{where}: bytes {offset}…{offset + length} lie outside the payload of {len(payload)}")
    data = bytes(payload[offset : offset + length])
    if entry.get("deflated"):
        try:
            data = zlib.decompress(data)
        except zlib.error as exc:
            raise ModelError(f"{where}: damaged deflated bytes: {exc}") from exc
    if entry.get("codec") == "bytes":
        return data
    try:
        return decode_tensor(entry, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: {exc}") from exc


def _decode_theta(op: Operator, saved: dict[str, Any], shape: tuple[int, ...], payload: memoryview,
                  where: str) -> Theta:  # fmt: skip
    fields = {key: _field(entry, payload, f"{where} field '{key}'") for key, entry in saved["fields"].items()}
    if saved.get("encoder") != "operator":
        return fields  # type: ignore[return-value]
    try:
        return op.decode(fields, shape)
    except LcdslError:
        raise
    except Exception as exc:  # a plugin's decode may raise anything on bad bytes
        raise ModelError(f"{where}: {type(op).__name__}.decode failed: {exc}") from exc


def load_lcz(path: str | os.PathLike[str], model: nn.Module, *, registry: Registry | None = None) -> dict[str, Theta]:
    """Set ``model``'s weights from a ``.lcz`` file: ``Δ(θ)`` per task, dense ones as saved.

    The saved spec is bound to ``model`` to rebuild each task's operator, so the model must have
    the parameters (and shapes) it was compressed with. Nothing is unpickled.

    Args:
        path: the ``.lcz`` file.
        model: the architecture; its weights are overwritten.
        registry: where the spec's operators come from (default: the installed plugins).

    Returns:
        ``θ`` by task name, on the model's device.

    Raises:
        ModelError: the file is missing, damaged, or does not fit ``model``.
    """
    manifest, payload = _read(path)
    try:
        plan = parse(str(manifest["spec"]), filename=f"{path} (saved spec)").bind(model, registry=registry)
        saved_tasks = {t["name"]: t for t in manifest["tasks"]}
        dense = dict(manifest["dense"])
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: damaged manifest: missing {exc}") from exc
    by_name = parameters_by_name(model)
    thetas: dict[str, Theta] = {}
    with torch.no_grad():
        for task in plan.tasks:
            saved = saved_tasks.get(task.name)
            if saved is None or saved.get("operator") != repr(task.operator):
                raise ModelError(f"{path}: task {task.name} is missing or was saved with another operator")
            params = [by_name[name] for name in task.parameters]
            theta = _decode_theta(task.operator, saved, task.view_shape, payload, f"{path}: task {task.name}")
            thetas[task.name] = write_theta(task, params, theta, where=str(path))
        if set(dense) != set(plan.dense):
            raise ModelError(
                f"{path}: the dense parameters saved ({', '.join(sorted(dense)) or 'none'}) are not those the "
                f"spec leaves dense on this model ({', '.join(plan.dense) or 'none'})"
            )
        for name, entry in dense.items():
            value = _field(entry, payload, f"{path}: dense parameter '{name}'")
            if name not in by_name or not isinstance(value, torch.Tensor) or by_name[name].shape != value.shape:
                raise ModelError(f"{path}: dense parameter '{name}' is missing from the model or has another shape")
            by_name[name].copy_(value)
    return thetas
