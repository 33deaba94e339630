"""Training: seeded mini-batches, the reference model, and the L step ``lcdsl compress`` runs.

The data order comes from one seeded ``torch.Generator`` (:class:`Batches`); its state goes into
checkpoints, so a resumed run sees exactly the batches an uninterrupted one would.

The reference recipe is the LC papers' LeNet300 one (BENCHMARKS §1): SGD, lr 0.1, Nesterov
momentum 0.9, batch 256, lr × 0.95 per epoch, 30 epochs. The L step follows the spec's settings:
a fresh optimizer each LC step (the penalty changes with μ; old momentum would push ``w`` away
from the new ``Δ(θ)``), ``lr · lr_decay^k`` at LC step ``k``, ``first_epochs`` for the first L
step and ``epochs`` after, on cross-entropy with the penalty's gradient added in place
(``engine.add_penalty_grad()`` after each backward pass: the same gradient as adding
``engine.penalty()`` to the loss, at a fraction of the cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from lcdsl.console import console
from lcdsl.data import Dataset
from lcdsl.errors import EngineError
from lcdsl.settings import Settings

if TYPE_CHECKING:
    from lcdsl.engine import Engine

__all__ = [
    "Recipe",
    "default_recipe",
    "Batches",
    "make_optimizer",
    "train_epochs",
    "train_reference",
    "LStep",
    "make_l_step",
    "error_rate",
]


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


class Batches:
    """Shuffled mini-batches from one seeded generator, whose state can be saved and restored."""

    def __init__(self, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise EngineError(f"batch size must be ≥ 1, got {batch_size}")
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: same order on any device

    def count(self, n: int) -> int:
        """Batches an epoch of ``n`` examples has."""
        return math.ceil(n / self.batch_size)

    def epoch(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over ``(x, y)`` in a fresh random order."""
        order = torch.randperm(x.shape[0], generator=self.generator).to(x.device)  # (N,)
        for start in range(0, x.shape[0], self.batch_size):
            index = order[start : start + self.batch_size]
            yield x[index], y[index]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state (a byte tensor)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.generator.set_state(state["generator"])


def make_optimizer(
    model: nn.Module, kind: str, lr: float, momentum: float = 0.9, nesterov: bool = True
) -> torch.optim.Optimizer:
    """SGD (with momentum, Nesterov if asked) or Adam over all of ``model``'s parameters."""
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if kind != "sgd":
        raise EngineError(f"unknown optimizer '{kind}' (sgd, adam)")
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def _progress() -> Progress:
    """A transient epochs/batches bar on a terminal; silent otherwise."""
    out = console()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batches: Batches,
    epochs: int,
    *,
    add_penalty_grad: Callable[[], None] | None = None,
    lr_decay: float = 1.0,
    description: str = "training",
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Train ``epochs`` epochs on cross-entropy; returns the last epoch's mean loss.

    Args:
        add_penalty_grad: called after each backward pass, before the optimizer step, to add
            the penalty's gradient (:meth:`Engine.add_penalty_grad`).
        lr_decay: the learning rate is multiplied by this after every epoch.
        on_epoch: called with (epoch index, mean loss) after every epoch.
    """
    model.train()
    n_batches = batches.count(data.x_train.shape[0])
    mean = float("nan")
    with _progress() as progress:
        bar = progress.add_task(description, total=epochs * n_batches)
        for epoch in range(epochs):
            total = torch.zeros((), dtype=torch.float64, device=data.x_train.device)
            for x, y in batches.epoch(data.x_train, data.y_train):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                total += loss.detach() * x.shape[0]  # the data loss, without the penalty
                loss.backward()
                if add_penalty_grad is not None:
                    add_penalty_grad()
                optimizer.step()
                progress.advance(bar)
            mean = float(total) / data.x_train.shape[0]  # one sync per epoch
            if not math.isfinite(mean):
                return mean
            if on_epoch is not None:
                on_epoch(epoch, mean)
            if lr_decay != 1.0:
                for group in optimizer.param_groups:
                    group["lr"] *= lr_decay
    return mean


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """The fraction of ``x`` that ``model`` misclassifies (in eval mode; the mode is restored)."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        scores = model(x[start : start + batch_size])  # (batch, classes)
        wrong += (scores.argmax(dim=1) != y[start : start + batch_size]).sum()
    model.train(was_training)
    return float(wrong) / max(1, x.shape[0])


def train_reference(model: nn.Module, data: Dataset, recipe: Recipe) -> list[dict[str, float]]:
    """Train ``model`` on ``data`` by ``recipe``; returns one record a epoch.

    Each record holds ``epoch`` (1-based), ``lr``, ``loss`` (mean training loss) and
    ``test_error``. Seed the initial weights (``torch.manual_seed(recipe.seed)``) before
    building the model; the data order is seeded here.

    Raises:
        EngineError: the loss became non-finite (lower the learning rate).
    """
    batches = Batches(recipe.batch_size, recipe.seed)
    optimizer = make_optimizer(model, recipe.optimizer, recipe.lr, recipe.momentum, recipe.nesterov)
    history: list[dict[str, float]] = []

    def record(epoch: int, loss: float) -> None:
        lr = recipe.lr * recipe.lr_decay**epoch
        history.append(
            {"epoch": epoch + 1, "lr": lr, "loss": loss, "test_error": error_rate(model, data.x_test, data.y_test)}
        )
        model.train()

    loss = train_epochs(
        model, optimizer, data, batches, recipe.epochs,
        lr_decay=recipe.lr_decay, description="reference", on_epoch=record,
    )  # fmt: skip
    if not math.isfinite(loss):
        raise EngineError(f"reference training diverged (loss {loss}); lower the learning rate (now {recipe.lr})")
    return history


class LStep:
    """The L step :meth:`Engine.run` calls: ``lstep(engine, k)`` trains on loss + penalty
    (the penalty's gradient added in place, :meth:`Engine.add_penalty_grad`).

    Its state (the data generator's) goes into checkpoints via :meth:`state_dict`.
    """

    def __init__(self, model: nn.Module, data: Dataset, settings: Settings) -> None:
        self.model = model
        self.data = data
        self.settings = settings
        self.batches = Batches(settings.batch_size, settings.seed)

    def lr(self, k: int) -> float:
        """The learning rate of LC step ``k`` (0-based): ``lr · lr_decay^k``."""
        return self.settings.lr * self.settings.lr_decay**k

    def epochs(self, k: int) -> int:
        """Epochs of LC step ``k``: ``first_epochs`` for the first, ``epochs`` after."""
        return self.settings.first_epochs if k == 0 else self.settings.epochs

    def __call__(self, engine: Engine, k: int) -> float:
        """Train one L step; returns the last epoch's mean cross-entropy (penalty excluded)."""
        s = self.settings
        optimizer = make_optimizer(self.model, s.optimizer, self.lr(k), s.momentum, s.nesterov)
        return train_epochs(
            self.model, optimizer, self.data, self.batches, self.epochs(k),
            add_penalty_grad=engine.add_penalty_grad, description=f"L step {k + 1}/{len(engine.mus)}",
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue with the same batches."""
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.batches.load_state_dict(state["batches"])


def make_l_step(model: nn.Module, data: Dataset, settings: Settings) -> LStep:
    """The callable :meth:`lcdsl.engine.Engine.run` wants, for ``model`` on ``data``."""
    return LStep(model, data, settings)
