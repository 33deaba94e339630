"""One mini-batch through a model: moving it to the device, the forward call, the loss, the logits.

A batch is what the data gives (:mod:`lcdsl.training.data`):

- a tensor: the inputs, ``model(x)``; no labels (the loss must come from ``--loss``);
- a tuple or list ``(x, y, …)``: ``model(x)``, labels ``y``;
- a dict (Hugging Face style: ``input_ids``, ``attention_mask``, ``labels``): ``model(**batch)``,
  labels ``batch["labels"]``.

A model may return a tensor of class scores, or a ``ModelOutput`` / dict. The loss of a batch is,
in this order:

1. ``loss_fn(outputs, batch)`` when a loss function is given (``--loss module:function``);
2. the model's own ``loss`` (``outputs.loss`` or ``outputs["loss"]``: the model computed it from
   the labels in the batch);
3. cross-entropy of the logits (the tensor itself, or ``outputs.logits``) against the labels,
   sequence logits ``(N, T, C)`` flattened against labels ``(N, T)`` (``-100`` is ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lcdsl.errors import ModelError
from lcdsl.store.probe import field_of as _field
from lcdsl.store.probe import logits_of

__all__ = [
    "Batch", "LossFn", "to_device", "forward", "labels_of", "logits_of", "batch_loss", "batch_len", "is_classification",
]  # fmt: skip

Batch = Any
"""A tensor, a tuple/list ``(x, y, …)`` or a dict of tensors."""

LossFn = Callable[[Any, Batch], torch.Tensor]
"""A user's loss: ``(outputs, batch) -> scalar tensor``."""


def to_device(batch: Batch, device: torch.device | str | None) -> Batch:
    """``batch`` with every tensor in it on ``device`` (nested tuples, lists and dicts kept)."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return moved if isinstance(batch, list) else tuple(moved)
    return batch


def forward(model: nn.Module, batch: Batch) -> Any:
    """``model(**batch)`` for a dict, ``model(batch[0])`` for a tuple, ``model(batch)`` else."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)


def labels_of(batch: Batch) -> torch.Tensor | None:
    """The labels of ``batch``: its second item, its ``labels`` (or ``label``) entry, or None."""
    if isinstance(batch, Mapping):
        for key in ("labels", "label"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
        return None
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    return None


def batch_len(batch: Batch) -> int:
    """Examples in ``batch``: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim():
            return int(value.shape[0])
    return 1


def batch_loss(outputs: Any, batch: Batch, loss_fn: LossFn | None = None) -> torch.Tensor:
    """The loss of one batch (see the module docstring for the order of the rules).

    Raises:
        ModelError: no rule applies (no loss, no logits, or no labels), or ``loss_fn`` gives no
            scalar tensor.
    """
    if loss_fn is not None:
        loss = loss_fn(outputs, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ModelError(f"the --loss function must return a scalar tensor, got {got}")
        return loss.reshape(())
    if not isinstance(outputs, torch.Tensor):
        own = _field(outputs, "loss")
        if isinstance(own, torch.Tensor):
            return own
    logits, labels = logits_of(outputs), labels_of(batch)
    if logits is None or labels is None:
        what = "no logits" if logits is None else "no labels in the batch"
        raise ModelError(
            f"cannot compute a loss: the model returned {type(outputs).__name__} without a loss and there are "
            f"{what}; give labels (a (x, y) batch or a 'labels' entry) or --loss module:function"
        )
    if logits.dim() == labels.dim() + 1 and logits.shape[:-1] == labels.shape:
        if logits.dim() > 2:  # sequence scores (N, T, C) against labels (N, T)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return F.cross_entropy(logits, labels)
    raise ModelError(
        f"cannot compute a cross-entropy: logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)} "
        "(want (N, classes) and (N,), or (N, T, classes) and (N, T)); give --loss module:function"
    )


def is_classification(outputs: Any, batch: Batch) -> bool:
    """Whether a batch has one label a example and the model one score row a example: ``(N, C)``
    logits and ``(N,)`` labels, so its error rate is meaningful."""
    logits, labels = logits_of(outputs), labels_of(batch)
    return (
        logits is not None and labels is not None and logits.dim() == 2 and labels.dim() == 1
        and logits.shape[0] == labels.shape[0] and not labels.is_floating_point()
    )  # fmt: skip
