"""The compressed model's outputs on a probe batch: what ``lcdsl export`` checks its file against.

``lcdsl compress`` records, in ``compressed.pt``, the outputs of the model it evaluated (weights
``Δ(θ)``, its dense parameters and buffers, in eval mode) on the first :data:`PROBE_SIZE` test
inputs, with the data set's name and split seed and a digest of those inputs
(:func:`probe_outputs`). ``lcdsl export`` loads the ``.lcz`` file it has just written into a fresh
model and compares that model's outputs on the same inputs (:func:`check_probe`): a file that
lost something the model needs (BatchNorm's running statistics, a dense parameter) fails, and
the previous file is left as it was::

    probe = probe_outputs(model, data.x_test, data="digits", seed=0)     # after compress
    check_probe(reloaded, probe, data.x_test, where="model.lcz")         # before export keeps it
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lcdsl.errors import ModelError

__all__ = ["PROBE_SIZE", "PROBE_VALUES", "PROBE_TOLERANCE", "field_of", "logits_of", "model_outputs", "probe_outputs", "check_probe"]

PROBE_SIZE = 16
"""How many test inputs the probe batch holds at most (the first ones of the test split)."""

PROBE_VALUES = 2**14
"""The most output numbers kept: a model with large outputs (a language model's logits over a
vocabulary, per token) is probed on fewer inputs, at least one."""

PROBE_TOLERANCE = 1e-4
"""The largest output difference allowed, relative to the largest saved output (at least 1):
the same θ, dense parameters and buffers give the same outputs on one device; the slack covers
another device's kernels. A lost BatchNorm statistic moves the outputs by far more."""


def field_of(outputs: Any, name: str) -> Any:
    """``outputs[name]`` of a mapping (a dict, a ``ModelOutput``), else the attribute, else None."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def logits_of(outputs: Any) -> torch.Tensor | None:
    """The class scores of a model's outputs: the tensor itself, ``.logits``/``["logits"]``, or None."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = field_of(outputs, "logits")
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    return None


def model_outputs(out: Any) -> torch.Tensor:
    """The tensor of a forward's result (:func:`logits_of`: the tensor itself, the ``logits`` of a
    Hugging Face ``ModelOutput`` or a dict, a tuple's first tensor).

    Raises:
        ModelError: the result holds no such tensor."""
    logits = logits_of(out)
    if logits is None:
        raise ModelError(f"the model returned {type(out).__name__}, not a tensor or something with logits")
    return logits


def _digest(x: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (the same on every device)."""
    t = x.detach().cpu().contiguous().reshape(-1)
    h = hashlib.sha256(f"{t.dtype} {tuple(x.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def _eval_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model_outputs(model(x)).detach().cpu().clone()
    finally:
        model.train(was_training)


def probe_outputs(
    model: nn.Module, x_test: torch.Tensor, *, data: str, seed: int | None, count: int = PROBE_SIZE
) -> dict[str, Any]:
    """The model's outputs in eval mode on ``x_test[:count]`` (its mode is restored), as plain data;
    on fewer inputs when they would hold more than :data:`PROBE_VALUES` numbers.

    Args:
        model: the compressed model, as evaluated.
        x_test: the test inputs (the probe batch is their first ``count``).
        data: the data set's name, for the record.
        seed: the seed that split the data set (``load_data(..., seed=seed)`` gives the same
            test inputs again).

    Returns:
        ``{"data", "seed", "count", "inputs_sha256", "outputs"}`` (outputs on the CPU).
    """
    inputs = x_test[:count]
    outputs = _eval_outputs(model, inputs)
    per_input = max(1, outputs[:1].numel())
    if inputs.shape[0] * per_input > PROBE_VALUES:
        inputs = x_test[: max(1, PROBE_VALUES // per_input)]
        outputs = _eval_outputs(model, inputs)  # on the batch export will run, for equal numerics
    return {
        "data": data,
        "seed": seed,
        "count": int(inputs.shape[0]),
        "inputs_sha256": _digest(inputs),
        "outputs": outputs,
    }


def check_probe(model: nn.Module, probe: dict[str, Any], x_test: torch.Tensor, *, where: str) -> float:
    """Compare ``model``'s outputs on the probe batch with the saved ones.

    Args:
        model: the model loaded back from the file being checked.
        probe: what :func:`probe_outputs` recorded.
        x_test: the test inputs, loaded as the run loaded them (same data set and seed).
        where: the file, for messages.

    Returns:
        The largest absolute output difference.

    Raises:
        ModelError: the inputs are not those of the run, or the outputs differ by more than
            :data:`PROBE_TOLERANCE` of the largest saved output.
    """
    try:
        count, digest, saved = int(probe["count"]), probe["inputs_sha256"], probe["outputs"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: the saved probe outputs are damaged (no {exc})") from exc
    inputs = x_test[:count]
    if _digest(inputs) != digest:
        raise ModelError(
            f"{where}: cannot check the file: the first {count} test inputs of {probe.get('data')!r} "
            f"(seed {probe.get('seed')}) are not those the run recorded its outputs on"
        )
    ours = _eval_outputs(model, inputs)
    if ours.shape != saved.shape:
        raise ModelError(f"{where}: the model loaded back gives outputs of shape {tuple(ours.shape)}, "
                         f"the compressed model gave {tuple(saved.shape)}")  # fmt: skip
    saved64, ours64 = saved.to(torch.float64), ours.to(torch.float64)
    gap = float((ours64 - saved64).abs().max()) if saved.numel() else 0.0
    allowed = PROBE_TOLERANCE * max(1.0, float(saved64.abs().max()) if saved.numel() else 0.0)
    if not gap <= allowed:  # also NaN
        raise ModelError(
            f"{where}: the model loaded back from this file differs from the compressed model that "
            f"'lcdsl compress' evaluated: outputs on {count} test inputs differ by up to {gap:.3g} "
            f"(allowed {allowed:.3g})"
        )
    return gap
