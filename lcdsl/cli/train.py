"""``lcdsl train --model M --data D --out ref.pt``: train a reference model to compress later."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.formats import REFERENCE_FORMAT
from lcdsl.report.console import console
from lcdsl.store.atomic import check_writable, save_atomic
from lcdsl.store.checkpoint import load_reference, reference_record
from lcdsl.training.batch import LossFn
from lcdsl.training.data import Data, check_fits, load_data, model_kwargs
from lcdsl.training.epochs import evaluate
from lcdsl.training.reference import Recipe, default_recipe, train_reference
from lcdsl.training.zoo import load_factory, load_model

__all__ = [
    "add_parser",
    "run",
    "REFERENCE_FORMAT",
    "add_model_data_arguments",
    "resolve_device",
    "build_model",
    "load_model_data",
    "reference_state",
    "load_reference",
    "train",
    "load_loss",
]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``train`` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="train a reference model (the starting point of compression)",
        description="Train MODEL on DATA with the LeNet300 recipe (SGD, Nesterov 0.9, lr × 0.95 per "
        "epoch) and save its weights with the model and data names and its test error.",
    )
    add_model_data_arguments(parser)
    parser.add_argument("--out", metavar="PATH", required=True, help="where to save the weights (e.g. ref.pt)")
    parser.add_argument("--epochs", metavar="N", type=int, help="epochs (default 30; 20 on digits)")
    parser.add_argument("--lr", metavar="X", type=float, help="learning rate of the first epoch (default 0.1)")
    parser.add_argument("--batch-size", metavar="N", type=int, help="mini-batch size (default 256; 64 on digits)")
    parser.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of the weights and the data order (default 0)"
    )
    parser.set_defaults(func=run)


def add_model_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data``, ``--data-dir`` and ``--device``, shared with ``compress``."""
    parser.add_argument(
        "--model", metavar="M", default="lenet300",
        help="built-in model (lenet300, lenet5) or module:function (runs that module's code); default lenet300",
    )  # fmt: skip
    parser.add_argument(
        "--data", metavar="D", default="digits",
        help="digits, fashion-mnist, mnist, or module:function (runs that module's code); default digits",
    )  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR", help="folder of IDX files for fashion-mnist / mnist")
    parser.add_argument(
        "--loss", metavar="F",
        help="module:function, a loss (outputs, batch) -> scalar tensor (default: the model's own loss, "
        "else cross-entropy of its logits)",
    )  # fmt: skip
    parser.add_argument("--device", metavar="DEVICE", default="cpu", help="torch device to train on (default cpu)")


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` names, if this machine has it.

    Raises:
        ModelError: a malformed name, or a device this machine lacks.
    """
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"'{name}' is not a torch device (cpu, cuda, cuda:1, mps, …)") from exc
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type, True)
    if device.type == "meta":
        raise ModelError(f"device '{name}' holds no data, so nothing can be trained on it (use cpu, cuda, …)")
    if not available:
        raise ModelError(f"device '{name}' is not available on this machine")
    return device


def load_loss(reference: str | None) -> LossFn | None:
    """The ``--loss module:function`` callable, or None.

    Raises:
        ModelError: the reference cannot be imported or is not callable.
    """
    return None if reference is None else load_factory(reference)  # type: ignore[return-value]


def build_model(
    name: str, data: Data, *, seed: int, device: str = "cpu", loss_fn: LossFn | None = None
) -> nn.Module:
    """The model ``name`` sized for ``data``, initialised from ``seed``, on ``device``.

    Raises:
        ModelError: unknown model, or one that does not fit the data's shapes (or gives no loss).
    """
    torch.manual_seed(seed)
    model = load_model(name, **model_kwargs(name, data)).to(resolve_device(device))
    check_fits(model, data, model_name=f"model '{name}'", loss_fn=loss_fn)
    return model


def load_model_data(args: argparse.Namespace, seed: int) -> tuple[Data, nn.Module]:
    """The data and the model :func:`add_model_data_arguments` name, on ``--device``; ``seed``
    splits the data (where it is split) and initialises the model.

    Raises:
        DataError: the data set cannot be loaded.
        ModelError: unknown model or device, or a model that does not fit the data.
    """
    device = resolve_device(args.device)
    data = load_data(args.data, data_dir=args.data_dir, seed=seed).to(device)
    loss_fn = load_loss(getattr(args, "loss", None))
    return data, build_model(args.model, data, seed=seed, device=str(device), loss_fn=loss_fn)


def reference_state(
    model: nn.Module, *, model_name: str, data: Data, recipe: Recipe | None, history: list,
    loss_fn: LossFn | None = None,
) -> dict[str, Any]:
    """What a reference file holds (:func:`lcdsl.store.checkpoint.reference_record`): weights,
    names, recipe, and the errors on ``data`` (or the test loss of a model that is not a
    classifier, :func:`~lcdsl.training.epochs.evaluate`), measured here."""
    metrics = evaluate(model, data, loss_fn)
    state = reference_record(
        model, model_name=model_name, data_name=data.name, recipe=attrs.asdict(recipe) if recipe is not None else {},
        history=history, test_error=metrics.get("test_error"), train_error=metrics.get("train_error"),
    )  # fmt: skip
    if "test_loss" in metrics:
        state["test_loss"] = metrics["test_loss"]
    return state


def describe_metrics(metrics: dict[str, Any]) -> str:
    """``train error 1.20%, test error 3.40%`` or ``test loss 2.3456``: what is known of a model."""
    parts = [
        f"{key.replace('_', ' ')} {100 * metrics[key]:.2f}%" for key in ("train_error", "test_error")
        if metrics.get(key) is not None
    ]  # fmt: skip
    if metrics.get("test_loss") is not None:
        parts.append(f"test loss {metrics['test_loss']:.4f}")
    return ", ".join(parts) or "no test numbers"


def train(
    model: nn.Module, model_name: str, data: Data, recipe: Recipe, out: Path, loss_fn: LossFn | None = None
) -> dict[str, Any]:
    """Train a reference, save it atomically to ``out``; returns its metadata."""
    start = time.perf_counter()
    history = train_reference(model, data, recipe, loss_fn)
    state = reference_state(model, model_name=model_name, data=data, recipe=recipe, history=history, loss_fn=loss_fn)
    save_atomic(state, out)
    console().print(
        f"reference {model_name} on {data.name}: {recipe.epochs} epochs in {time.perf_counter() - start:.1f}s, "
        f"{describe_metrics(state)} → {out}"
    )
    return {k: v for k, v in state.items() if k != "state_dict"}


def run(args: argparse.Namespace) -> int:
    """Train and save a reference model; returns the exit code."""
    out = Path(args.out)
    for name in ("seed", "epochs", "batch_size"):
        value, low = getattr(args, name), 0 if name == "seed" else 1
        if value is not None and not low <= value < 2**32:
            flag = "--" + name.replace("_", "-")
            raise ModelError(f"{flag} must be an integer in [{low}, 2**32), got {value}")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise ModelError(f"--lr must be a positive finite number, got {args.lr}")
    if out.is_dir():
        raise ModelError(f"--out {out} is a folder; give the file to write (e.g. {out / 'reference.pt'})")
    check_writable(out.parent)  # Path("ref.pt").parent is Path(".")
    data, model = load_model_data(args, args.seed)
    recipe = default_recipe(data.name, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    train(model, args.model, data, recipe, out, load_loss(args.loss))
    return 0
