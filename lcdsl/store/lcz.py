"""Compact export: a compressed model as one ``.lcz`` file, and loading it back.

A ``.lcz`` file is one binary, readable without unpickling anything::

    b"LCZ1"                      4 bytes, the magic (:data:`~lcdsl.formats.MAGIC`)
    manifest length              4 bytes, unsigned little-endian
    manifest                     zlib-deflated UTF-8 JSON: format (:data:`~lcdsl.formats.LCZ_FORMAT`),
                                 spec text, resolved plan, sizes, versions, each task's operator
                                 (spec text and plugin), and for every field of every θ, dense
                                 parameter and buffer: codec, dtype, shape, offset and length
                                 into the payload
    payload                      the fields' bytes, back to back

The model it holds is the saved model of :mod:`lcdsl.store.model` (θ per task, the dense
parameters, the buffers), written from :func:`~lcdsl.store.model.model_record` and read back
through :func:`~lcdsl.store.model.restore_model`, as ``compressed.pt`` is.

Each task's ``θ`` is encoded by its operator when the operator implements
:meth:`~lcdsl.operators.base.Operator.encode`, else tensor by tensor by content
(:func:`lcdsl.operators.bitpack.encode_tensor`: assignments bit-packed, kept positions as a bitmask or
packed indices, reals as raw little-endian bytes). Parameters no rule compresses are stored raw,
and so are the model's buffers (BatchNorm's running statistics, …; :func:`lcdsl.operators.bitpack.encode_raw`).
So the payload is the bits the plan reports (:meth:`Operator.storage`) plus the dense leftovers
and the buffers, rounded up to whole bytes per field. The manifest is deflated (for LeNet300 its JSON takes
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
import math
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.formats import LCZ_FORMAT, MAGIC
from lcdsl.operators.base import Operator, Theta
from lcdsl.plan.model import Plan
from lcdsl.plugins.origin import versions
from lcdsl.store.atomic import write_atomic
from lcdsl.store.fields import ExportSizes, Field, decode_field, decode_theta, encode_model, field_limit
from lcdsl.store.model import check_operator, loading_plan, restore_model
from lcdsl.store.safetensors_file import export_safetensors

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = ["MAGIC", "LCZ_FORMAT", "EXPORT_FORMATS", "ExportSizes", "export_model", "read_manifest", "load_lcz"]

EXPORT_FORMATS = ("lcz", "safetensors")
"""The files :func:`export_model` writes."""

_READABLE = (1, LCZ_FORMAT)
"""The manifest formats :func:`read_manifest` accepts (format 1: operators by ``repr``, no buffers)."""

_HEADER = struct.Struct("<4sI")  # magic, manifest length


class _Payload:
    """Lays fields' bytes back to back and records where each one lands."""

    def __init__(self, deflate: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.deflate = deflate

    def add(self, field: Field) -> dict[str, Any]:
        entry, data = dict(field.meta), field.data
        if self.deflate:
            packed = zlib.compress(data, 9)
            if len(packed) < len(data):
                data, entry["deflated"] = packed, True
        self.chunks.append(data)
        entry.update(offset=self.size, length=len(data))
        self.size += len(data)
        return entry


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
    registry: Registry | None = None,
    format: str = "lcz",
) -> ExportSizes:
    """Write ``θ`` of every task of ``plan``, ``model``'s dense parameters and its buffers to a
    ``.lcz`` file, or with ``format="safetensors"`` to a ``.safetensors`` file
    (:func:`~lcdsl.store.safetensors_file.export_safetensors`; the same fields, one tensor each).

    Args:
        model: the model (only its parameters that no task compresses, and its buffers, are read).
        plan: the plan ``thetas`` were computed for.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`, :func:`load_compressed`).
        path: the file to write (atomically).
        spec_text: the spec's source; :func:`load_lcz` binds it again.
        model_name: how the model is named (``lenet300``, ``pkg.mod:factory``), for the record.
        extra: more JSON-ready entries for the manifest (e.g. ``{"deploy": true}``).
        deflate: deflate each field where that makes it smaller (the payload then no longer
            matches the plan's bits).
        registry: where the plan's operators came from (default: the installed plugins).
        format: ``"lcz"`` or ``"safetensors"``.

    Returns:
        The sizes (an ``.lcz`` manifest records them;
        :func:`~lcdsl.store.safetensors_file.read_safetensors_manifest` derives them).

    Raises:
        ModelError: ``thetas`` lacks a task, an operator's ``encode`` gives a bad field, the
            format is unknown, or ``deflate`` is asked of a safetensors file.
    """
    if format == "safetensors":
        if deflate:
            raise ModelError("deflate applies to .lcz files: a safetensors file's tensors are read as they are")
        return export_safetensors(model, plan, thetas, path, spec_text=spec_text, model_name=model_name,
                                  extra=extra, registry=registry)  # fmt: skip
    if format != "lcz":
        raise ModelError(f"unknown export format {format!r} (known: {', '.join(EXPORT_FORMATS)})")
    encoded = encode_model(model, plan, thetas, spec_text=spec_text, registry=registry)
    payload = _Payload(deflate)
    tasks = [
        {**task.entry(), "fields": {key: payload.add(field) for key, field in task.fields.items()}}
        for task in encoded.tasks
    ]
    dense = {name: payload.add(field) for name, field in encoded.dense.items()}
    buffers = {name: payload.add(field) for name, field in encoded.buffers.items()}
    sizes = {
        "dense_bytes": encoded.dense_bytes,
        "predicted_bytes": encoded.predicted_bytes,
        "payload_bytes": payload.size,
        "buffer_bytes": encoded.buffer_bytes,
    }
    manifest = {
        "format": LCZ_FORMAT,
        "model": model_name,
        "spec": spec_text,
        "plan": encoded.plan,
        "tasks": tasks,
        "dense": dense,
        "buffers": buffers,
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


MAX_MANIFEST_BYTES = 64 << 20
"""The most bytes a manifest may inflate to (a real one is a few KiB: the spec, the plan, the field
table); a deflated manifest that would inflate past this is refused while inflating."""

_BYTES_PER_VALUE = 16  # no codec stores a value in more bytes (complex128)


def _inflate(data: bytes, limit: int, where: str) -> bytes:
    """``data`` inflated, refusing (while inflating, never after) output longer than ``limit``."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ModelError(f"{where}: damaged deflated bytes: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise ModelError(f"{where}: inflates to more than the {limit:,} bytes it can hold")
    if not inflater.eof:
        raise ModelError(f"{where}: damaged deflated bytes: incomplete or truncated stream")
    return out


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
        if blob[8:10] == b'{"':  # a safetensors file: an 8-byte header length, then its JSON
            raise ModelError(f"{path}: a safetensors file, not an .lcz one: load it with load_safetensors")
        raise ModelError(f"{path}: not an .lcz file (it starts with {magic!r}, not {MAGIC!r})")
    if _HEADER.size + length > len(blob):
        raise ModelError(f"{path}: truncated (the manifest runs past the end of the file)")
    head = _inflate(blob[_HEADER.size : _HEADER.size + length], MAX_MANIFEST_BYTES, f"{path}: manifest")
    try:
        manifest = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: damaged manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") not in _READABLE:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{path}: not an .lcz manifest of format {LCZ_FORMAT} or 1 (found {found!r})")
    return manifest, memoryview(blob)[_HEADER.size + length :]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a ``.lcz`` file (spec, plan, sizes, versions, field table), format 2 or 1.

    Raises:
        ModelError: the file is missing, not an ``.lcz`` file, or damaged.
    """
    return _read(path)[0]


def _field(entry: Any, payload: memoryview, where: str, values: int) -> torch.Tensor | bytes:
    """One field's bytes (inflated to at most what its tensor can take), decoded.

    ``values`` is how many numbers the tensor it restores holds (:func:`~lcdsl.store.fields.field_limit`)."""
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: damaged manifest: the entry is {type(entry).__name__}, not a dict")
    try:
        offset, length = int(entry["offset"]), int(entry["length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: no offset or length") from exc
    if offset < 0 or length < 0 or offset + length > len(payload):
        raise ModelError(f"{where}: bytes {offset}…{offset + length} lie outside the payload of {len(payload)}")
    data = bytes(payload[offset : offset + length])
    limit = field_limit(values)
    if entry.get("deflated"):
        data = _inflate(data, limit * _BYTES_PER_VALUE, where)
    return decode_field(entry, data, where=where, limit=limit)


def _decode_theta(op: Operator, saved: dict[str, Any], shape: tuple[int, ...], payload: memoryview,
                  where: str) -> Theta:  # fmt: skip
    if not isinstance(saved.get("fields"), dict):
        raise ModelError(f"{where}: damaged manifest: no fields")
    values = math.prod(shape)
    fields = {
        key: _field(entry, payload, f"{where} field '{key}'", values) for key, entry in saved["fields"].items()
    }
    return decode_theta(op, saved.get("encoder"), fields, shape, where)


def load_lcz(
    path: str | os.PathLike[str], model: nn.Module, *, registry: Registry | None = None, plan: Plan | None = None
) -> dict[str, Theta]:
    """Set ``model``'s weights and buffers from a ``.lcz`` file: ``Δ(θ)`` per task, the rest as saved.

    The saved spec is bound to ``model`` to rebuild each task's operator, so the model must have
    the parameters (and shapes) it was compressed with. Nothing is unpickled.

    Args:
        path: the ``.lcz`` file.
        model: the architecture; its weights and buffers are overwritten.
        registry: where the spec's operators come from (default: the installed plugins).
        plan: the plan to read the file with instead of the saved spec bound again (one built
            in code; :func:`~lcdsl.store.model.loading_plan`).

    Returns:
        ``θ`` by task name, on the model's device.

    Raises:
        ModelError: the file is missing, damaged, or does not fit ``model``.
    """
    manifest, payload = _read(path)
    where, legacy = str(path), manifest["format"] == 1
    plan = loading_plan(manifest.get("spec"), model, plan=plan, where=where, registry=registry)
    try:
        saved_tasks = {t["name"]: t for t in manifest["tasks"]}
        dense = dict(manifest["dense"])
        buffers = None if legacy else dict(manifest.get("buffers", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged manifest: missing {exc}") from exc
    thetas: dict[str, Theta] = {}
    for task in plan.tasks:
        saved = saved_tasks.get(task.name)
        check_operator(task, saved, where=where, registry=registry, legacy=legacy)
        thetas[task.name] = _decode_theta(task.operator, saved, task.view_shape, payload, f"{path}: task {task.name}")
    sizes = {name: t.numel() for name, t in model.state_dict().items()}  # the most values a field can hold
    largest = max(sizes.values(), default=0)
    dense_values = {
        name: _field(entry, payload, f"{path}: dense parameter '{name}'", sizes.get(name, largest))
        for name, entry in dense.items()
    }
    buffer_values = None
    if buffers is not None:
        buffer_values = {
            name: _field(entry, payload, f"{path}: buffer '{name}'", sizes.get(name, largest))
            for name, entry in buffers.items()
        }
    return restore_model(model, plan, thetas, dense_values, buffer_values, where=where)
