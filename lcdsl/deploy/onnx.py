"""ONNX files of deployed models: each quantized weight stored as its codes and codebook.

:func:`export_onnx` deploys a model (:func:`lcdsl.deploy.deploy`, codebook layers expanding at
every forward) and writes it with ``torch.onnx.export`` (the ``torch.export``-based exporter, one
self-contained file). A codebook layer's forward is torch ops on its buffers, so the file holds
its packed codes (``uint8``, 1, 2, 4 or 8 bits a code) and its codebook as initializers, and the
graph expands them (a ``Gather`` of what each byte decodes to) before the ``Gemm``/``Conv``. Low-rank
layers are two layers, removed units are gone. The file's ``metadata_props`` hold
``lcdsl.format`` (:data:`lcdsl.formats.ONNX_FORMAT`) and, when given, ``lcdsl.spec`` (the spec text).

The file is written to memory, checked in onnxruntime against the deployed torch model on the
example inputs (largest absolute and relative differences; a relative difference above
:data:`ONNX_TOLERANCE` is an error and nothing is written), then written atomically. The dense
model is exported the same way (not written) for its size.

Needs the optional extra ``onnx`` (``pip install 'lcdsl[onnx]'``: onnx, onnxruntime, onnxscript);
without it :class:`~lcdsl.errors.MissingExtraError` says so.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from lcdsl.deploy.core import Deployment, deploy, relative_difference
from lcdsl.errors import EngineError, MissingExtraError
from lcdsl.formats import ONNX_FORMAT
from lcdsl.operators.base import Theta
from lcdsl.operators.compact import set_cache
from lcdsl.plan.model import Plan
from lcdsl.store.atomic import write_atomic
from lcdsl.store.probe import logits_of

__all__ = ["OnnxExport", "export_onnx", "onnx_bytes", "run_onnx", "require_onnx", "ONNX_TOLERANCE"]

ONNX_TOLERANCE = 1e-5
"""The largest relative difference between onnxruntime's outputs and the torch model's."""

EXTRA = ("onnx", "onnxruntime", "onnxscript")
"""What the optional extra ``onnx`` installs."""

LABEL_KEYS = ("labels", "label")
"""Keyword inputs that are targets, not inputs of the exported graph."""


@contextlib.contextmanager
def _quiet(logger: str) -> Any:
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def require_onnx() -> None:
    """Raise :class:`MissingExtraError` unless onnx, onnxruntime and onnxscript import."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'lcdsl[onnx]'"
        )


class _Outputs(nn.Module):
    """The model with keyword inputs in a fixed order and one tensor out (its logits)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, inputs))) if self.names else self.model(*inputs)
        logits = logits_of(out)
        if logits is None:
            raise EngineError(f"the model returned {type(out).__name__}, not a tensor or something with logits")
        return logits


def _inputs(example: Any) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...]]:
    """(keyword names or (), the input tensors) of an example batch: a tensor, or a dict of them."""
    if isinstance(example, torch.Tensor):
        return (), (example,)
    if isinstance(example, Mapping):
        items = [(k, v) for k, v in example.items() if k not in LABEL_KEYS and isinstance(v, torch.Tensor)]
        if not items:
            raise EngineError("the example batch holds no input tensors to export the model with")
        return tuple(k for k, _ in items), tuple(v for _, v in items)
    raise EngineError(f"an ONNX export needs example inputs as a tensor or a dict of tensors, got {type(example).__name__}")


def onnx_bytes(module: nn.Module, example: Any, *, metadata: Mapping[str, str] | None = None) -> bytes:
    """``module`` (in eval mode, codebook layers expanding at every forward) as an ONNX file's
    bytes, the batch axis dynamic.

    Raises:
        MissingExtraError: the extra ``onnx`` is not installed.
        EngineError: ``torch.onnx.export`` fails (the message has its reason)."""
    require_onnx()
    names, inputs = _inputs(example)
    wrapper = _Outputs(set_cache(module, False).eval(), names)
    batch = torch.export.Dim("batch", min=1)
    dynamic = (tuple({0: batch} for _ in inputs),)  # one entry: forward's *inputs
    try:
        # the exporter prints its progress and logs warnings about packages it does not need
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), _quiet("torch.onnx"), _quiet("onnxscript"), _quiet("onnx_ir"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, inputs, dynamo=True, external_data=False, dynamic_shapes=dynamic,
                                        optimize=False, verbose=False)  # fmt: skip
    except Exception as exc:  # the exporter fails in many ways on user models
        raise EngineError(f"torch.onnx.export failed: {_summary(exc)}") from exc
    proto = program.model_proto
    _strip_trace_records(proto.graph)
    _drop_wrapper_prefix(proto.graph)
    for key, value in {"lcdsl.format": str(ONNX_FORMAT), **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def _strip_trace_records(graph: Any) -> None:
    """Drop what the exporter records per node and value (stack traces, source names): it is
    most of a small model's file and nothing a runtime reads."""
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                _strip_trace_records(attribute.g)
    for value in (*graph.value_info, *graph.input, *graph.output):
        del value.metadata_props[:]
        value.doc_string = ""
    for initializer in graph.initializer:
        del initializer.metadata_props[:]


def _drop_wrapper_prefix(graph: Any) -> None:
    """Initializers named as in the model (``fc1.packed``), not as in the wrapper (``model.fc1.packed``)."""
    prefix = "model."
    renamed = {i.name: i.name[len(prefix):] for i in graph.initializer if i.name.startswith(prefix)}
    for initializer in graph.initializer:
        initializer.name = renamed.get(initializer.name, initializer.name)
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed:
                node.input[position] = renamed[name]


def _summary(exc: BaseException) -> str:
    """The exporter's own one-line reason (its messages open with advice, the cause comes later)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith("<class")), None)
    return cause or (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


def run_onnx(data: bytes | str | os.PathLike[str], example: Any) -> np.ndarray:
    """The first output of an ONNX model (bytes or a file) on ``example``, run in onnxruntime (1 thread)."""
    require_onnx()
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its optimizer's notes on what it cannot fold are not ours
    source = data if isinstance(data, bytes) else str(data)
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    _, inputs = _inputs(example)
    feed = {arg.name: x.detach().cpu().numpy() for arg, x in zip(session.get_inputs(), inputs)}
    return session.run(None, feed)[0]


@attrs.frozen
class OnnxExport:
    """What :func:`export_onnx` wrote and measured."""

    path: Path
    """The file written."""
    file_bytes: int
    """Its size."""
    dense_bytes: int | None
    """The size of the same model exported densely (original layers, weights ``Δ(θ)``), None
    when not measured."""
    max_abs_difference: float
    """``max |onnxruntime − torch|`` of the deployed model's outputs on the example inputs."""
    relative_difference: float
    """That difference over ``max |torch|``."""
    deployment: Deployment = attrs.field(eq=False, repr=False)
    """The deployed model that was exported, with its per-layer report."""


def export_onnx(
    model: nn.Module,
    plan: Plan | None,
    thetas: dict[str, Theta] | None,
    example: Any,
    path: str | os.PathLike[str],
    *,
    dense_size: bool = True,
    spec_text: str | None = None,
    deployment: Deployment | None = None,
) -> OnnxExport:
    """Deploy ``model`` and write it to ``path`` as ONNX, checked in onnxruntime first.

    Args:
        model: the model holding ``Δ(θ)`` (not modified; it runs in eval mode).
        plan, thetas: as for :func:`lcdsl.deploy.deploy`.
        example: inputs to trace with (the batch axis is dynamic) and to check on: a tensor, or
            a dict of keyword inputs (``labels`` are left out).
        path: the file to write.
        dense_size: also export the dense model (to memory) to report its size.
        spec_text: stored in the file's metadata as ``lcdsl.spec``.
        deployment: a deployment already made of ``model`` (skips :func:`deploy`).

    Raises:
        MissingExtraError: the extra ``onnx`` is not installed.
        EngineError: the export fails, or onnxruntime's outputs differ from torch's by more
            than :data:`ONNX_TOLERANCE` (relative); then nothing is written.
    """
    require_onnx()
    was_training = model.training
    model.eval()
    try:
        return _export(model, plan, thetas, example, path, dense_size, spec_text, deployment)
    finally:
        model.train(was_training)


def _export(
    model: nn.Module, plan: Plan | None, thetas: dict[str, Theta] | None, example: Any, path: str | os.PathLike[str],
    dense_size: bool, spec_text: str | None, deployment: Deployment | None,
) -> OnnxExport:  # fmt: skip
    if deployment is None:
        deployment = deploy(model, plan, thetas, example=example)
    module = set_cache(deployment.module, False).eval()
    metadata = {"lcdsl.spec": spec_text} if spec_text else None
    data = onnx_bytes(module, example, metadata=metadata)
    with torch.inference_mode():
        names, inputs = _inputs(example)
        expected = _Outputs(module, names)(*inputs).detach().cpu()
    got = torch.from_numpy(run_onnx(data, example))
    if got.shape != expected.shape:
        raise EngineError(f"the ONNX model gives outputs of shape {tuple(got.shape)}, torch {tuple(expected.shape)}")
    gap = float((got.to(expected.dtype) - expected).abs().max()) if expected.numel() else 0.0
    relative = relative_difference(expected, got)
    if relative > ONNX_TOLERANCE:
        raise EngineError(f"the ONNX model's outputs differ from torch's by {relative:.2g} (relative, largest "
                          f"{gap:.2g}), more than {ONNX_TOLERANCE:g}; {path} was not written")  # fmt: skip
    dense = len(onnx_bytes(model, example)) if dense_size else None
    write_atomic(path, lambda f: f.write(data))
    return OnnxExport(Path(path), len(data), dense, gap, relative, deployment)
