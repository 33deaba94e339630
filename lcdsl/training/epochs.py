"""Epochs of training: seeded mini-batches, the optimizer, the loop over batches, the test error.

The data order comes from one seeded ``torch.Generator`` (:class:`Batches`); its state goes into
checkpoints, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from lcdsl.errors import EngineError
from lcdsl.report.console import console
from lcdsl.training.data import Dataset

__all__ = ["Batches", "make_optimizer", "train_epochs", "error_rate"]


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
