"""The run checkpoint (``checkpoint.pt``) and the reference file (``reference.pt``): their layouts.

Both are dicts of tensors and plain data, written with :func:`~lcdsl.store.atomic.save_atomic`
and read with ``torch.load(weights_only=True)``. The model's weights in them are its whole
``state_dict`` (parameters and buffers, on the CPU: :func:`model_weights`), so a run resumes, and a
reference loads, exactly.

``checkpoint.pt`` (:data:`~lcdsl.formats.CHECKPOINT_FORMAT`), after every LC step of ``lcdsl compress``::

    "format", "model_name", "data_name", "spec_text"
    "model"       the model's state_dict
    "engine"      Engine.state_dict() (μ, step, θ and λ per task, the plan it fits)
    "trainer"     the L step's state (where the data order is)
    "reference"   what is known of the reference (path, names, errors, recipe)
    "history"     every step's record as a dict

``reference.pt`` (:data:`~lcdsl.formats.REFERENCE_FORMAT`), from ``lcdsl train``::

    "format", "model", "data"
    "state_dict"  the model's state_dict
    "recipe"      how it was trained (a dict), "history" one record per epoch
    "test_error", "train_error"

The store knows nothing of training: callers pass the L step as anything with ``state_dict`` and
``load_state_dict``, and the reference's errors as numbers.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol

import torch
from torch import nn

from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError, ModelError
from lcdsl.formats import CHECKPOINT_FORMAT, REFERENCE_FORMAT
from lcdsl.store.atomic import load_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT", "REFERENCE_FORMAT", "Stateful", "model_weights", "run_checkpoint", "read_run_checkpoint",
    "restore_run_checkpoint", "reference_record", "load_reference", "validate_reference", "validate_run_checkpoint",
    "differences", "check_reuse",
]  # fmt: skip


class Stateful(Protocol):
    """What the run checkpoint saves of the L step: its state as plain data and tensors."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def model_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` (parameters and buffers) as CPU copies."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _weights_problem(value: Any) -> str | None:
    """Why ``value`` is not a state_dict (names to tensors), or None."""
    if not isinstance(value, dict):
        return f"is {type(value).__name__}, expected a dict of tensors"
    bad = next((k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        return f"['{bad}'] is {type(value[bad]).__name__}, expected a tensor"
    return None


def _number_problem(value: Any) -> str | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        return None
    return f"is {value!r}, expected a finite number"


def validate_reference(state: Any, path: str | os.PathLike[str]) -> None:
    """Check ``reference.pt`` against its layout (the module docstring): only ``format``, ``model``,
    ``data`` and ``state_dict`` are needed; the errors, ``recipe`` and ``history`` may be missing,
    and are of the right type when present.

    Raises:
        ModelError: naming the key that is wrong.
    """
    if not isinstance(state, dict) or state.get("format") != REFERENCE_FORMAT or "state_dict" not in state:
        raise ModelError(f"{path}: not an lcdsl reference (make one with 'lcdsl train')")
    problems = {
        "state_dict": _weights_problem(state["state_dict"]),
        **{k: _number_problem(state.get(k)) for k in ("test_error", "train_error", "test_loss")},
        "recipe": None if isinstance(state.get("recipe", {}), dict) else "is not a dict",
        "history": None if isinstance(state.get("history", []), list) else "is not a list",
    }
    for key, problem in problems.items():
        if problem is not None:
            raise ModelError(f"{path}: {key} {problem}")


def validate_run_checkpoint(checkpoint: Any, path: str | os.PathLike[str]) -> None:
    """Check ``checkpoint.pt`` against its layout (the module docstring): every key present and of
    its type. The engine state inside is checked against the plan when it is loaded
    (:meth:`~lcdsl.engine.Engine.load_state_dict`).

    Raises:
        EngineError: naming the key that is wrong.
    """
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise EngineError(f"{path}: not an lcdsl checkpoint of format {CHECKPOINT_FORMAT}")
    types = {"model_name": str, "data_name": str, "spec_text": str, "engine": dict, "trainer": dict,
             "reference": dict, "history": list}  # fmt: skip
    for key, kind in types.items():
        if key not in checkpoint:
            raise EngineError(f"{path}: the checkpoint has no '{key}'")
        if not isinstance(checkpoint[key], kind):
            found = type(checkpoint[key]).__name__
            raise EngineError(f"{path}: checkpoint '{key}' is {found}, expected {kind.__name__}")
    problem = _weights_problem(checkpoint.get("model"))
    if problem is not None:
        raise EngineError(f"{path}: checkpoint 'model' {problem}")
    weights = checkpoint["model"].items()
    bad = next((k for k, v in weights if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise EngineError(f"{path}: checkpoint model['{bad}'] holds NaN or infinite values")
    for key in ("test_error", "train_error", "test_loss"):
        problem = _number_problem(checkpoint["reference"].get(key))
        if problem is not None:
            raise EngineError(f"{path}: checkpoint reference['{key}'] {problem}")


def run_checkpoint(
    model: nn.Module,
    engine: Engine,
    trainer: Stateful,
    *,
    model_name: str,
    data_name: str,
    spec_text: str,
    reference: dict[str, Any],
) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds (see the module docstring).

    Args:
        model: the model being compressed.
        engine: its engine.
        trainer: the L step (its data order is saved).
        model_name: the model as the command line names it.
        data_name: the data set's name.
        spec_text: the spec's source.
        reference: what is known of the reference model (plain data).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "data_name": data_name,
        "spec_text": spec_text,
        "model": model_weights(model),
        "engine": engine.state_dict(),
        "trainer": trainer.state_dict(),
        "reference": reference,
        "history": [r.to_dict() for r in engine.history],
    }


def read_run_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``checkpoint.pt``, checked to be a run checkpoint of :data:`CHECKPOINT_FORMAT`.

    Raises:
        EngineError: the file is missing, damaged, or not a run checkpoint of this format.
    """
    checkpoint = load_checkpoint(path)
    validate_run_checkpoint(checkpoint, path)
    return checkpoint


def restore_run_checkpoint(
    checkpoint: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    model_name: str,
    data_name: str,
    model: nn.Module,
    engine: Engine,
    trainer: Stateful,
    hint: str = "",
) -> dict[str, Any]:
    """Put a run checkpoint's state back into the model, the engine and the L step.

    Args:
        checkpoint: what :func:`read_run_checkpoint` read from ``path``.
        path: the file, for messages.
        model_name, data_name: what this run compresses; the checkpoint must be for the same.
        model, engine, trainer: where the state goes.
        hint: added to an error when the engine state does not fit this plan (what to do instead).

    Returns:
        The reference's metadata, as saved.

    Raises:
        EngineError: the checkpoint is for another model, data set or plan, or is malformed.
    """
    for key, ours in (("model_name", model_name), ("data_name", data_name)):
        if checkpoint.get(key) != ours:
            raise EngineError(
                f"cannot resume {path}: it was made for {key.split('_')[0]} '{checkpoint.get(key)}', not '{ours}'"
            )
    try:
        engine.load_state_dict(checkpoint["engine"])
    except EngineError as exc:
        raise EngineError(f"{path}: {exc} — {hint}" if hint else f"{path}: {exc}") from exc
    except KeyError as exc:
        raise EngineError(f"cannot resume {path}: it has no {exc}") from exc
    try:
        model.load_state_dict(checkpoint["model"])
        trainer.load_state_dict(checkpoint["trainer"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"cannot resume {path}: {exc}") from exc
    return dict(checkpoint["reference"])


def reference_record(
    model: nn.Module,
    *,
    model_name: str,
    data_name: str,
    recipe: dict[str, Any],
    history: list[Any],
    test_error: float,
    train_error: float,
) -> dict[str, Any]:
    """What ``reference.pt`` holds: the weights, the names, the recipe, the errors (see the module
    docstring)."""
    return {
        "format": REFERENCE_FORMAT,
        "model": model_name,
        "data": data_name,
        "state_dict": model_weights(model),
        "recipe": recipe,
        "history": history,
        "test_error": test_error,
        "train_error": train_error,
    }


def load_reference(
    path: str | os.PathLike[str], model: nn.Module, *, model_name: str, data_name: str
) -> dict[str, Any]:
    """Load reference weights into ``model``; returns the file's metadata (without the weights).

    Raises:
        ModelError: the file is missing or malformed, or was saved for another model or dataset
            (or its weights do not fit).
    """
    state = load_checkpoint(path, error=ModelError)
    validate_reference(state, path)
    for key, ours in (("model", model_name), ("data", data_name)):
        if state.get(key) != ours:
            raise ModelError(f"{path} was trained for {key} '{state.get(key)}', not '{ours}'")
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: the weights do not fit model '{model_name}': {exc}") from exc
    return {k: v for k, v in state.items() if k != "state_dict"}


def differences(saved: Any, ours: dict[str, Any]) -> list[str]:
    """What differs between what a file was made from (``saved``) and what this run asks for
    (``ours``), one ``key X → Y`` a difference; a ``saved`` that is not a dict differs whole."""
    if not isinstance(saved, dict) or not saved:
        return ["it records nothing of what it was made from"]
    return [
        f"{key} {saved.get(key, '(none)')!r} → {ours.get(key, '(none)')!r}"
        for key in sorted(set(saved) | set(ours), key=str)
        if saved.get(key) != ours.get(key)
    ]


def check_reuse(path: str | os.PathLike[str], verb: str, saved: Any, ours: dict[str, Any], *, hint: str) -> None:
    """Refuse to reuse the file ``path`` when what it was made from differs from what this run asks for.

    Raises:
        ModelError: ``{path} was {verb} with other settings than this run asks for (seed 0 → 1): {hint}``.
    """
    changed = differences(saved, ours)
    if changed:
        raise ModelError(f"{path} was {verb} with other settings than this run asks for ({'; '.join(changed)}): {hint}")
