"""Epochs of training: seeded mini-batches, the optimizer, the loop over batches, the test error.

The data order comes from one seeded ``torch.Generator`` (:class:`Batches`); its state goes into
checkpoints, so a resumed run sees exactly the batches an uninterrupted one would (in-memory data
and map-style torch datasets; a user's ``DataLoader`` keeps its own order, see
:class:`~lcdsl.training.data.LoaderData`).

On a terminal a transient bar shows the batches; otherwise an L step that has run for more than
:data:`EPOCH_LINE_SECONDS` prints one plain line per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.utils.data as tud
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from lcdsl.errors import EngineError, ModelError
from lcdsl.report.console import console
from lcdsl.training.batch import (
    Batch,
    LossFn,
    batch_len,
    batch_loss,
    forward,
    is_classification,
    labels_of,
    logits_of,
    to_device,
)  # fmt: skip
from lcdsl.training.data import Data, Dataset

__all__ = [
    "Batches", "make_optimizer", "train_epochs", "error_rate", "evaluate", "LrSchedule", "EPOCH_LINE_SECONDS",
]  # fmt: skip

EPOCH_LINE_SECONDS = 10.0
"""When output is not a terminal, training that has run this long prints a line per epoch."""


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

    def count_of(self, data: Data) -> int | None:
        """Batches an epoch of ``data`` has (None for a loader without a length)."""
        if isinstance(data, Dataset):
            return self.count(data.x_train.shape[0])
        source = data.train
        if isinstance(source, tud.DataLoader):
            try:
                return len(source)
            except TypeError:
                return None
        if isinstance(source, tud.IterableDataset):
            return None
        return self.count(len(source))

    def of(self, data: Data) -> Iterator[Batch]:
        """One epoch of ``data``'s training batches, on its device: ``(x, y)`` pairs of in-memory
        data in a fresh seeded order, a map-style dataset's items in a fresh seeded order joined by
        ``default_collate``, a loader's batches as it gives them."""
        if isinstance(data, Dataset):
            yield from self.epoch(data.x_train, data.y_train)
            return
        source = data.train
        if isinstance(source, (tud.DataLoader, tud.IterableDataset)):
            loader = source if isinstance(source, tud.DataLoader) else tud.DataLoader(source, self.batch_size)
            for batch in loader:
                yield to_device(batch, data.device)
            return
        order = torch.randperm(len(source), generator=self.generator).tolist()
        for start in range(0, len(order), self.batch_size):
            items = [source[i] for i in order[start : start + self.batch_size]]
            yield to_device(tud.default_collate(items), data.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state (a byte tensor)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.generator.set_state(state["generator"])


def make_optimizer(
    model: nn.Module,
    kind: str,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    *,
    weight_decay: float = 0.0,
    no_decay: Iterable[nn.Parameter] = (),
) -> torch.optim.Optimizer:
    """SGD (with momentum, Nesterov if asked) or Adam over all of ``model``'s parameters.

    Args:
        weight_decay: L2 weight decay (the optimizer's own ``weight_decay``), on every parameter
            but those in ``no_decay``.
        no_decay: parameters kept out of the decay (the L step passes the compressed ones).
    """
    params: Any = model.parameters()
    if weight_decay > 0:
        skip = {id(p) for p in no_decay}
        decayed = [p for p in model.parameters() if id(p) not in skip]
        kept = [p for p in model.parameters() if id(p) in skip]
        params = [{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind != "sgd":
        raise EngineError(f"unknown optimizer '{kind}' (sgd, adam)")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


class LrSchedule:
    """The learning rate within one L step: ``constant``, ``cosine`` (from the step's lr to 0 over
    its batches, per batch) or ``step`` (× ``factor`` every ``every`` epochs)."""

    def __init__(self, kind: str = "constant", *, every: int = 1, factor: float = 0.5) -> None:
        if kind not in ("constant", "cosine", "step"):
            raise EngineError(f"unknown lr schedule '{kind}' (constant, cosine, step)")
        self.kind, self.every, self.factor = kind, every, factor

    def scale(self, epoch: int, batch: int, epochs: int, batches: int | None) -> float:
        """The factor on the base lr at ``batch`` (0-based) of ``epoch`` (0-based)."""
        if self.kind == "step":
            return self.factor ** (epoch // self.every)
        if self.kind == "cosine" and batches:
            t, total = epoch * batches + batch, epochs * batches
            return 0.5 * (1 + math.cos(math.pi * t / total))
        if self.kind == "cosine":  # a loader without a length: per epoch
            return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        return 1.0


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
    data: Data,
    batches: Batches,
    epochs: int,
    *,
    add_penalty_grad: Callable[[], None] | None = None,
    lr_decay: float = 1.0,
    description: str = "training",
    on_epoch: Callable[[int, float], None] | None = None,
    loss_fn: LossFn | None = None,
    schedule: LrSchedule | None = None,
) -> float:
    """Train ``epochs`` epochs; returns the last epoch's mean loss (a mean over examples).

    The loss of a batch is :func:`lcdsl.training.batch.batch_loss`: ``loss_fn``, else the model's
    own ``loss``, else cross-entropy of its logits.

    Args:
        add_penalty_grad: called after each backward pass, before the optimizer step, to add
            the penalty's gradient (:meth:`Engine.add_penalty_grad`).
        lr_decay: the learning rate is multiplied by this after every epoch.
        on_epoch: called with (epoch index, mean loss) after every epoch.
        loss_fn: a user's ``(outputs, batch) -> loss``.
        schedule: the learning rate within these epochs (None: constant).
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(
            f"{description}: the model has no trainable parameter (every one has requires_grad=False), "
            "so there is nothing to train; unfreeze some (p.requires_grad_(True)) before training"
        )
    model.train()
    n_batches = batches.count_of(data)
    scheduled = schedule is not None and schedule.kind != "constant"
    base = [group["lr"] for group in optimizer.param_groups]
    out = console()
    started = time.perf_counter()
    mean = float("nan")
    with _progress() as progress:
        bar = progress.add_task(description, total=None if n_batches is None else epochs * n_batches)
        for epoch in range(epochs):
            total: torch.Tensor | None = None
            count = 0
            for index, batch in enumerate(batches.of(data)):
                if scheduled:
                    scale = schedule.scale(epoch, index, epochs, n_batches)
                    for group, lr in zip(optimizer.param_groups, base):
                        group["lr"] = lr * scale
                optimizer.zero_grad(set_to_none=True)
                loss = batch_loss(forward(model, batch), batch, loss_fn)
                n = batch_len(batch)
                if total is None:
                    total = torch.zeros((), dtype=torch.float64, device=loss.device)
                total += loss.detach() * n  # the data loss, without the penalty
                count += n
                loss.backward()
                if add_penalty_grad is not None:
                    add_penalty_grad()
                optimizer.step()
                progress.advance(bar)
            if total is None:
                raise ModelError(f"the training data of '{getattr(data, 'name', data)}' gave no batch")
            mean = float(total) / count  # one sync per epoch
            if not math.isfinite(mean):
                return mean
            elapsed = time.perf_counter() - started
            if not out.is_terminal and elapsed >= EPOCH_LINE_SECONDS:
                out.print(f"{description}: epoch {epoch + 1}/{epochs}, loss {mean:.4f}, {elapsed:.1f}s")
            if on_epoch is not None:
                on_epoch(epoch, mean)
            if lr_decay != 1.0:
                base = [lr * lr_decay for lr in base]
                for group in optimizer.param_groups:
                    group["lr"] *= lr_decay
    return mean


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> float:
    """The fraction of ``x`` that ``model`` misclassifies (in eval mode; the mode is restored).

    The model may return scores ``(batch, classes)`` or a ``ModelOutput``/dict with ``logits``."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        scores = logits_of(model(x[start : start + batch_size]))  # (batch, classes)
        wrong += (scores.argmax(dim=1) != y[start : start + batch_size]).sum()
    model.train(was_training)
    return float(wrong) / max(1, x.shape[0])


def _test_batches(data: Data, batch_size: int) -> Iterator[Batch]:
    if isinstance(data, Dataset):
        for start in range(0, data.x_test.shape[0], batch_size):
            yield data.x_test[start : start + batch_size], data.y_test[start : start + batch_size]
        return
    source = data.test if data.test is not None else data.train
    loader = source if isinstance(source, tud.DataLoader) else tud.DataLoader(source, batch_size=batch_size)
    for batch in loader:
        yield to_device(batch, data.device)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Data, loss_fn: LossFn | None = None, *, train: bool = True, batch_size: int = 256
) -> dict[str, float]:
    """What the step rows show of ``model`` on ``data`` (in eval mode; the mode is restored).

    A classifier (scores ``(N, classes)`` for labels ``(N,)``) gets its error rate: ``train_error``
    and ``test_error`` on in-memory data, ``test_error`` on a torch dataset or loader. Any other
    model (a language model: scores a token, or no labels) gets its mean ``test_loss`` per example.
    Without a test part of a torch dataset, the test numbers are the training data's.
    ``train=False`` leaves out ``train_error``.
    """
    if isinstance(data, Dataset) and data.y_train.dim() == 1:
        was_training = model.training
        model.eval()
        probe = (data.x_test[:2], data.y_test[:2])
        classifier = is_classification(forward(model, probe), probe)
        model.train(was_training)
        if classifier:
            metrics = {"train_error": error_rate(model, data.x_train, data.y_train)} if train else {}
            return {**metrics, "test_error": error_rate(model, data.x_test, data.y_test)}
    was_training = model.training
    model.eval()
    wrong, total, count, classifier = 0, 0.0, 0, True
    try:
        for batch in _test_batches(data, batch_size):
            outputs = forward(model, batch)
            n = batch_len(batch)
            total += float(batch_loss(outputs, batch, loss_fn)) * n
            count += n
            if classifier and is_classification(outputs, batch):
                wrong += int((logits_of(outputs).argmax(dim=1) != labels_of(batch)).sum())
            else:
                classifier = False
    finally:
        model.train(was_training)
    if count == 0:
        return {}
    return {"test_error": wrong / count} if classifier else {"test_loss": total / count}
