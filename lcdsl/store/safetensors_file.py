"""A compressed model as one ``.safetensors`` file, and loading it back.

The file is plain `safetensors <https://huggingface.co/docs/safetensors>`_: any safetensors reader
opens it, and nothing in it is pickled. Its tensors are the compact ``θ`` of every task, encoded
exactly as in ``.lcz`` (:mod:`lcdsl.store.fields`), then the parameters no rule compresses and the
model's buffers:

- ``<task>.<field>`` for each field of a task's ``θ`` (``fc1.weight.codebook``,
  ``fc1.weight.assignments``, ``fc2.weight.U``; an additive task's terms are numbered:
  ``fc1.weight.0.codebook``, ``fc1.weight.1.indices``). A field whose codec is ``raw`` (reals,
  codebooks, factors, kept values) is a tensor of its own dtype and shape; any other field
  (bit-packed assignments and indices, bitmasks, ±1 signs) is a 1-D ``uint8`` tensor of the
  codec's bytes, described in the ``codecs`` metadata entry;
- ``<name>`` for each dense parameter and buffer, under its ``state_dict`` name.

``__metadata__`` (text to text, as safetensors wants): ``format``
(:data:`~lcdsl.formats.SAFETENSORS_FORMAT`), ``spec`` (the spec's source), ``model``, and as
JSON: ``plan`` (the resolved plan: per task its name, parameters, shapes, operator spec text with
amounts resolved, plugin, encoder, size in ``params`` and ``bits``, and its ``fields``' names),
``dense`` (the dense parameters' names), ``codecs`` (tensor name → codec description, for every
tensor not stored as it is) and ``versions``; the plan's totals and the sizes follow from these
(:func:`read_safetensors_manifest`). ``docs/deploy.md`` ("safetensors layout") has the bit order
and a loader in a few lines.

The data is the ``.lcz`` payload, byte for byte in size, so the file is that payload plus the
safetensors header (JSON, padded to 8 bytes), which is not deflated: for LeNet300 1.4–2.6 kB.

Loading needs the model's architecture, as :func:`~lcdsl.store.lcz.load_lcz` does::

    model = LeNet300(in_features=64)
    thetas = load_safetensors("model.safetensors", model)   # weights are now Δ(θ)

The loader reads the header itself first and refuses one longer than :data:`MAX_HEADER_BYTES`,
then lets the safetensors library read the tensors, then checks every name, dtype, shape and
size against the model and the saved spec before writing a weight (:func:`restore_model`). A
file never chooses code: the operators are the saved spec's, bound again by this process's
plugins.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.formats import MAGIC, SAFETENSORS_FORMAT
from lcdsl.operators.base import FLOAT_BITS, Theta
from lcdsl.operators.bitpack import decode_tensor, encode_raw
from lcdsl.plan.model import Plan
from lcdsl.plan.names import buffers_by_name
from lcdsl.plugins.origin import versions
from lcdsl.store.atomic import write_atomic
from lcdsl.store.fields import ExportSizes, Field, decode_field, decode_theta, encode_model, field_limit
from lcdsl.store.model import check_operator, loading_plan, restore_model

if TYPE_CHECKING:
    from lcdsl.plugins.registry import Registry

__all__ = [
    "SAFETENSORS_FORMAT", "MAX_HEADER_BYTES", "export_safetensors", "read_safetensors_manifest", "load_safetensors",
]  # fmt: skip

MAX_HEADER_BYTES = 16 << 20
"""The longest header (tensor table and metadata) a file may have; a real one is a few kB, and
one of GPT-2 small's size some tens of kB."""

_RESERVED = frozenset({"format", "model", "spec", "plan", "dense", "codecs", "versions"})
"""The metadata keys the file's own entries take; ``extra`` entries go beside them."""

_DTYPE_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
}  # fmt: skip
"""safetensors' dtype names as lcdsl's codec descriptions spell them."""

_LENGTH = struct.Struct("<Q")  # the header's length, the first 8 bytes of every safetensors file


def _safetensors() -> Any:
    """The ``safetensors`` package (the optional extra ``lcdsl[safetensors]``)."""
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ModelError("the safetensors format needs the package 'safetensors': "
                         "pip install 'lcdsl[safetensors]'") from exc  # fmt: skip
    return safetensors


def _tensor(field: Field) -> torch.Tensor:
    """A field as a tensor: itself when stored raw, else its bytes as ``uint8`` ``(length,)``."""
    if field.meta.get("codec") == "raw":
        return decode_tensor(field.meta, field.data).contiguous()
    if not field.data:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(field.data), dtype=torch.uint8)


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_safetensors(
    model: nn.Module,
    plan: Plan,
    thetas: dict[str, Theta],
    path: str | os.PathLike[str],
    *,
    spec_text: str,
    model_name: str = "",
    extra: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> ExportSizes:
    """Write ``θ`` of every task of ``plan``, ``model``'s dense parameters and its buffers to a
    ``.safetensors`` file (layout in the module docstring).

    Args:
        model: the model (only its parameters that no task compresses, and its buffers, are read).
        plan: the plan ``thetas`` were computed for.
        thetas: ``θ`` by task name.
        path: the file to write (atomically).
        spec_text: the spec's source; :func:`load_safetensors` binds it again.
        model_name: how the model is named, for the record.
        extra: more JSON-ready entries for the metadata, each stored as JSON text under its key.
        registry: where the plan's operators came from (default: the installed plugins).

    Returns:
        The sizes (the payload is the tensors' bytes; the file adds the header).

    Raises:
        ModelError: ``thetas`` lacks a task, two tensors would share a name, or ``safetensors``
            is not installed.
    """
    library = _safetensors()
    clash = sorted(set(extra or {}) & _RESERVED)
    if clash:
        raise ModelError(f"extra metadata may not replace the file's own entries ({', '.join(clash)})")
    encoded = encode_model(model, plan, thetas, spec_text=spec_text, registry=registry)
    tensors: dict[str, torch.Tensor] = {}
    codecs: dict[str, dict[str, Any]] = {}

    def put(name: str, field: Field) -> None:
        if name in tensors:
            raise ModelError(f"two fields of the model would both be stored as the tensor '{name}'")
        tensors[name] = _tensor(field)
        if field.meta.get("codec") != "raw":
            codecs[name] = field.meta

    rows = {row["task"]: row for row in encoded.plan["tasks"]}
    tasks = []
    for task in encoded.tasks:
        for key, field in task.fields.items():
            put(f"{task.name}.{key}", field)
        size = {"params": rows[task.name]["params_after"], "bits": rows[task.name]["bits_after"]}
        tasks.append({**task.entry(), **size, "fields": list(task.fields)})
    for name, field in [*encoded.dense.items(), *encoded.buffers.items()]:
        put(name, field)
    # the totals of the plan and the sizes follow from these entries and the tensors (see
    # read_safetensors_manifest): the header stays as short as the file's tensors allow
    metadata = {
        **{key: _text(value) for key, value in (extra or {}).items()},
        "format": str(SAFETENSORS_FORMAT),
        "model": model_name,
        "spec": spec_text,
        "plan": _text(tasks),
        "dense": _text(list(encoded.dense)),
        "codecs": _text(codecs),
        "versions": _text(versions()),
    }
    blob = library.torch.save(tensors, metadata)
    write_atomic(path, lambda fh: fh.write(blob))
    return ExportSizes(
        dense_bytes=encoded.dense_bytes, predicted_bytes=encoded.predicted_bytes, payload_bytes=encoded.payload_bytes,
        file_bytes=len(blob), buffer_bytes=encoded.buffer_bytes,
    )  # fmt: skip


def _read_header(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensor table and the metadata, the header bounded (:data:`MAX_HEADER_BYTES`) and parsed here."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = fh.read(_LENGTH.size)
            if len(start) < _LENGTH.size:
                raise ModelError(f"{path}: not a safetensors file (too short)")
            if start.startswith(MAGIC):
                raise ModelError(f"{path}: an .lcz file, not a safetensors one: load it with load_lcz")
            (length,) = _LENGTH.unpack(start)
            if length > MAX_HEADER_BYTES:
                raise ModelError(f"{path}: not an lcdsl safetensors file (its header would take {length:,} bytes, "
                                 f"more than the {MAX_HEADER_BYTES:,} one may)")  # fmt: skip
            if _LENGTH.size + length > size:
                raise ModelError(f"{path}: truncated (the header runs past the end of the file)")
            head = fh.read(length)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: not a safetensors file (damaged header: {exc})") from exc
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a safetensors file (its header is {type(header).__name__}, not a table)")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelError(f"{path}: not an lcdsl safetensors file (no text metadata)")
    if metadata.get("format") != str(SAFETENSORS_FORMAT):
        raise ModelError(f"{path}: not an lcdsl safetensors file of format {SAFETENSORS_FORMAT} "
                         f"(found format {metadata.get('format')!r})")  # fmt: skip
    return header, metadata


def _json(metadata: dict[str, str], key: str, kind: type, where: str) -> Any:
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise ModelError(f"{where}: damaged metadata: no '{key}'") from None
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{where}: damaged metadata: '{key}' is not JSON ({exc})") from exc
    if not isinstance(value, kind):
        raise ModelError(f"{where}: damaged metadata: '{key}' is {type(value).__name__}, not a {kind.__name__}")
    return value


def _length(entry: Any) -> int:
    """A tensor's byte count from its ``data_offsets`` (0 when they are malformed)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
        return max(offsets[1] - offsets[0], 0)
    return 0


def read_safetensors_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of an lcdsl ``.safetensors`` file in the shape of an ``.lcz`` manifest
    (:func:`~lcdsl.store.lcz.read_manifest`): ``format``, ``model``, ``spec``, ``plan`` (per-task
    rows and totals), ``tasks`` (each field: its tensor, codec description and ``length`` in
    bytes), ``dense`` and ``buffers`` (the other tensors), ``sizes``, ``versions`` and any extra
    keys. Only the header is read.

    Raises:
        ModelError: the file is missing, not an lcdsl safetensors file, or damaged.
    """
    header, metadata = _read_header(path)
    where = str(path)
    tasks = _json(metadata, "plan", list, where)
    codecs = _json(metadata, "codecs", dict, where)
    dense_names = _json(metadata, "dense", list, where)

    def describe(name: str) -> dict[str, Any]:
        entry = header.get(name)
        if not isinstance(entry, dict):
            raise ModelError(f"{where}: the metadata names a tensor '{name}' that the file lacks")
        dtype = entry.get("dtype")
        dtype = _DTYPE_NAMES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        codec = codecs.get(name)
        if codec is None:  # stored as it is
            codec = {"codec": "raw", "dtype": dtype, "shape": entry.get("shape")}
        elif not isinstance(codec, dict):
            raise ModelError(f"{where}: damaged metadata: the codec of '{name}' is {type(codec).__name__}, not a table")
        return {"tensor": name, **codec, "length": _length(entry)}

    def numel(entry: dict[str, Any]) -> int:
        return math.prod(int(s) for s in entry.get("shape") or [])

    named: set[str] = set()
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("fields"), list):
            raise ModelError(f"{where}: damaged metadata: a task without fields")
        task["fields"] = {str(key): describe(f"{task.get('name')}.{key}") for key in task["fields"]}
        named.update(field["tensor"] for field in task["fields"].values())
    dense = {str(name): describe(str(name)) for name in dense_names}
    buffers = {name: describe(name) for name in header if name not in named and name not in dense}
    try:
        rows = [{"task": t["name"], "parameters": t["parameters"], "shapes": t["shapes"], "operator": t["operator"],
                 "params_after": t["params"], "bits_after": t["bits"]} for t in tasks]  # fmt: skip
        compressed = sum(math.prod(s) for t in tasks for s in t["shapes"])
        dense_params = sum(numel(entry) for entry in dense.values())
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"{where}: damaged metadata: {exc!r}") from exc
    buffer_bytes = sum(entry["length"] for entry in buffers.values())
    known = all(isinstance(row["bits_after"], int) for row in rows)
    bits_after = sum(row["bits_after"] for row in rows) + FLOAT_BITS * dense_params if known else None
    plan = {
        "tasks": rows, "dense": list(dense), "dense_params": dense_params, "compressed_weights": compressed,
        "bits_before": FLOAT_BITS * (compressed + dense_params), "bits_after": bits_after, "buffers": list(buffers),
        "buffer_bits": 8 * buffer_bytes,
    }  # fmt: skip
    sizes = {
        "dense_bytes": FLOAT_BITS * (compressed + dense_params) // 8 + buffer_bytes,
        "predicted_bytes": bits_after / 8 + buffer_bytes if bits_after is not None else float("nan"),
        "payload_bytes": sum(_length(entry) for entry in header.values()),
        "buffer_bytes": buffer_bytes,
    }
    extra = {key: _json(metadata, key, object, where) for key in metadata.keys() - _RESERVED}
    return {
        **extra, "format": SAFETENSORS_FORMAT, "model": metadata.get("model", ""), "spec": metadata.get("spec"),
        "plan": plan, "tasks": tasks, "dense": dense, "buffers": buffers, "sizes": sizes,
        "versions": _json(metadata, "versions", dict, where),
    }  # fmt: skip


def _field(name: Any, tensors: dict[str, torch.Tensor], codecs: dict[str, Any], where: str,
           limit: int) -> torch.Tensor | bytes:  # fmt: skip
    """One stored tensor back as the field it encodes, checked against its description."""
    if not isinstance(name, str) or name not in tensors:
        raise ModelError(f"{where}: names a tensor {name!r} that the file lacks")
    tensor = tensors[name]
    meta = codecs.get(name)
    if meta is None:  # stored as it is: its own dtype and shape are its description
        try:
            meta, data = encode_raw(tensor)
        except ValueError as exc:
            raise ModelError(f"{where}: tensor '{name}': {exc}") from exc
        return decode_field(meta, data, where=where, limit=limit)
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ModelError(f"{where}: tensor '{name}' holds packed bytes, so it must be 1-D uint8, "
                         f"not {str(tensor.dtype).removeprefix('torch.')} of shape {list(tensor.shape)}")  # fmt: skip
    return decode_field(meta, tensor.numpy().tobytes(), where=where, limit=limit)


def load_safetensors(
    path: str | os.PathLike[str], model: nn.Module, *, registry: Registry | None = None, plan: Plan | None = None
) -> dict[str, Theta]:
    """Set ``model``'s weights and buffers from an lcdsl ``.safetensors`` file: ``Δ(θ)`` per task,
    the rest as saved.

    The saved spec is bound to ``model`` to rebuild each task's operator, so the model must have
    the parameters (and shapes) it was compressed with. Every tensor of the file must be a field of
    a task, a dense parameter or a buffer of ``model``; nothing is unpickled.

    Args:
        path: the ``.safetensors`` file.
        model: the architecture; its weights and buffers are overwritten.
        registry: where the spec's operators come from (default: the installed plugins).
        plan: the plan to read the file with instead of the saved spec bound again (one built
            in code; :func:`~lcdsl.store.model.loading_plan`).

    Returns:
        ``θ`` by task name, on the model's device.

    Raises:
        ModelError: the file is missing, damaged, not lcdsl's, or does not fit ``model``.
    """
    library = _safetensors()
    _, metadata = _read_header(path)
    where = str(path)
    try:
        tensors = library.torch.load(Path(path).read_bytes())
    except OSError as exc:
        raise ModelError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    except Exception as exc:  # the library's own checks: offsets, dtypes, sizes
        raise ModelError(f"{where}: damaged safetensors data: {exc}") from exc
    saved_tasks = _json(metadata, "plan", list, where)
    codecs = _json(metadata, "codecs", dict, where)
    plan = loading_plan(metadata.get("spec"), model, plan=plan, where=where, registry=registry)
    by_name = {t["name"]: t for t in saved_tasks if isinstance(t, dict) and isinstance(t.get("name"), str)}
    if len(by_name) != len(saved_tasks) or set(by_name) != {task.name for task in plan.tasks}:
        ours = ", ".join(t.name for t in plan.tasks) or "none"
        raise ModelError(f"{where}: the tasks saved ({', '.join(map(str, by_name)) or 'none'}) are not those the "
                         f"saved spec binds on this model ({ours})")  # fmt: skip
    used: set[str] = set()
    thetas: dict[str, Theta] = {}
    for task in plan.tasks:
        saved = by_name[task.name]
        check_operator(task, saved, where=where, registry=registry)
        keys = saved.get("fields")
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise ModelError(f"{where}: task {task.name}: damaged metadata: no list of fields")
        values = field_limit(math.prod(task.view_shape))
        fields = {}
        for key in keys:
            name, at = f"{task.name}.{key}", f"{where}: task {task.name} field '{key}'"
            if name in used:
                raise ModelError(f"{at}: the tensor '{name}' is already another field's")
            fields[key] = _field(name, tensors, codecs, at, values)
            used.add(name)
        thetas[task.name] = decode_theta(task.operator, saved.get("encoder"), fields, task.view_shape,
                                         f"{where}: task {task.name}")  # fmt: skip
    own = {name: t.numel() for name, t in model.state_dict().items()}
    own_buffers = set(buffers_by_name(model))
    dense, buffers = {}, {}
    for name in tensors.keys() - used:
        if name not in plan.dense and name not in own_buffers:
            raise ModelError(f"{where}: tensor '{name}' is no field of a task, nor a dense parameter or buffer "
                             "of this model")  # fmt: skip
        value = _field(name, tensors, codecs, f"{where}: tensor '{name}'", field_limit(own.get(name, 0)))
        (dense if name in plan.dense else buffers)[name] = value
    return restore_model(model, plan, thetas, dense, buffers, where=where)
