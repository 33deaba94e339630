"""The reference model: the uncompressed network LC starts from, trained by a recipe.

The recipe is the LC papers' LeNet300 one (BENCHMARKS §1): SGD, lr 0.1, Nesterov momentum 0.9,
batch 256, lr × 0.95 per epoch, 30 epochs.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from torch import nn

from lcdsl.errors import EngineError
from lcdsl.training.batch import LossFn
from lcdsl.training.data import Data
from lcdsl.training.epochs import Batches, evaluate, make_optimizer, train_epochs

__all__ = ["Recipe", "default_recipe", "train_reference"]


@attrs.frozen
class Recipe:
    """How to train a reference model."""

    epochs: int = 30
    """Epochs in all."""
    lr: float = 0.1
    """Learning rate of the first epoch."""
    lr_decay: float = 0.95
    """The learning rate is multiplied by this after every epoch."""
    momentum: float = 0.9
    """SGD momentum."""
    nesterov: bool = True
    """Nesterov momentum."""
    batch_size: int = 256
    """Mini-batch size."""
    seed: int = 0
    """Seed of the initial weights (set by the caller) and of the data order."""
    optimizer: str = "sgd"
    """``"sgd"`` or ``"adam"``."""
    weight_decay: float = 0.0
    """L2 weight decay on every parameter."""


def default_recipe(data_name: str, **overrides: Any) -> Recipe:
    """The LeNet300 recipe; for ``digits`` (1,437 training images) batches of 64 and 20 epochs,
    which train in seconds to about 3–4 % test error. ``None`` overrides are ignored.

    Raises:
        EngineError: a non-positive epoch count, learning rate or batch size.
    """
    base = Recipe(batch_size=64, epochs=20) if data_name == "digits" else Recipe()
    recipe = attrs.evolve(base, **{k: v for k, v in overrides.items() if v is not None})
    if recipe.epochs < 1 or recipe.batch_size < 1 or not (recipe.lr > 0 and math.isfinite(recipe.lr)):
        raise EngineError(
            f"reference training needs epochs ≥ 1, batch size ≥ 1 and lr > 0 "
            f"(got {recipe.epochs}, {recipe.batch_size}, {recipe.lr})"
        )
    return recipe


def train_reference(
    model: nn.Module, data: Data, recipe: Recipe, loss_fn: LossFn | None = None
) -> list[dict[str, float]]:
    """Train ``model`` on ``data`` by ``recipe``; returns one record a epoch.

    Each record holds ``epoch`` (1-based), ``lr``, ``loss`` (mean training loss) and
    ``test_error`` (``test_loss`` for a model that is not a classifier,
    :func:`~lcdsl.training.epochs.evaluate`). Seed the initial weights (``torch.manual_seed(recipe.seed)``) before
    building the model; the data order is seeded here.

    Raises:
        EngineError: the loss became non-finite (lower the learning rate).
    """
    batches = Batches(recipe.batch_size, recipe.seed)
    optimizer = make_optimizer(
        model, recipe.optimizer, recipe.lr, recipe.momentum, recipe.nesterov, weight_decay=recipe.weight_decay
    )
    history: list[dict[str, float]] = []

    def record(epoch: int, loss: float) -> None:
        lr = recipe.lr * recipe.lr_decay**epoch
        history.append({"epoch": epoch + 1, "lr": lr, "loss": loss, **evaluate(model, data, loss_fn, train=False)})
        model.train()

    loss = train_epochs(
        model, optimizer, data, batches, recipe.epochs,
        lr_decay=recipe.lr_decay, description="reference", on_epoch=record, loss_fn=loss_fn,
    )  # fmt: skip
    if not math.isfinite(loss):
        raise EngineError(f"reference training diverged (loss {loss}); lower the learning rate (now {recipe.lr})")
    return history
