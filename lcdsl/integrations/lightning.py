"""A Lightning callback that runs the LC algorithm inside ``trainer.fit``.

::

    import lightning.pytorch as pl
    from lcdsl.integrations.lightning import LCCallback

    engine = lcdsl.Engine(module.net, lcdsl.load("my.lc").bind(module.net))
    lc = LCCallback(engine)                      # L steps of settings.first_epochs / epochs epochs
    trainer = pl.Trainer(max_epochs=lc.total_epochs, callbacks=[lc])
    trainer.fit(module, loader)                  # the model holds Δ(θ) afterwards

The training step stays as it is: the callback adds the penalty's gradient before each optimizer
step (``on_before_optimizer_step``: after accumulation, AMP unscaling and the DDP all-reduce, before
clipping), runs the C and multiplier steps at the end of each L step, sets the next μ, stops the
trainer when the schedule is done, and keeps its state in the trainer's checkpoints (callback
``state_dict``), so ``trainer.fit(..., ckpt_path=...)`` resumes the LC run too. Needs the
``lightning`` (or ``pytorch-lightning``) package: ``pip install 'lcdsl[lightning]'``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from lcdsl.engine.driver import DriverCallback

try:  # the unified package first, the standalone one otherwise
    import lightning.pytorch as pl
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    if exc.name not in ("lightning", "lightning.pytorch"):
        raise
    try:
        import pytorch_lightning as pl
    except ModuleNotFoundError as exc2:
        if exc2.name != "pytorch_lightning":
            raise
        raise ModuleNotFoundError(
            "lcdsl.integrations.lightning needs Lightning: pip install 'lcdsl[lightning]'", name="lightning"
        ) from None

__all__ = ["LCCallback"]


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The loss a ``training_step`` returned (a tensor, or a dict with ``"loss"``)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class LCCallback(DriverCallback, pl.Callback):
    """Runs the LC algorithm's schedule in a Lightning ``Trainer``.

    Args:
        engine: built on the network the LightningModule trains (the module itself or a
            sub-module of it).
        unit: an L step lasts ``length`` training epochs (``"epoch"``) or optimizer steps (``"step"``).
        length: units per L step; None takes the spec's ``epochs`` (``first_epochs`` for the first).
        first_length: units of the first L step; None: as ``length``, or the spec's ``first_epochs``.
        evaluate: metrics of the compressed model after each C step (called under
            ``engine.compressed()``), kept in the step's record.
        finalize: ``w ← Δ(θ)`` at the end of training once the schedule is done.
        reset_optimizer: clear the optimizer's state at the start of each L step.

    Raises:
        EngineError: at train start, if the engine's parameters are not the LightningModule's.
    """

    # the loss of the current unit, summed on the loss's device (one host sync per unit, not per batch)
    _loss_sum: torch.Tensor | float = 0.0
    _loss_count: int = 0
    _stepped: bool = False  # an optimizer step happened since the last batch end

    # --------------------------------------------------------------------- hooks

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.check_model(pl_module)
        self.driver.begin(trainer.optimizers)
        max_epochs = trainer.max_epochs
        if (
            self.driver.unit == "epoch"
            and max_epochs is not None
            and max_epochs >= 0
            and max_epochs - trainer.current_epoch < self.driver.remaining_units
        ):
            warnings.warn(
                f"lcdsl: max_epochs={max_epochs} is too few for the μ schedule: it needs "
                f"{self.driver.remaining_units} more epochs from epoch {trainer.current_epoch}",
                stacklevel=2,
            )

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.driver.add_penalty_grad()
        self._stepped = True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_count += 1
        if self.driver.unit == "step" and self._stepped:
            self._stepped = False
            if self.driver.unit_end(self._take_loss(), trainer.optimizers):
                trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.driver.unit == "epoch" and self.driver.unit_end(self._take_loss(), trainer.optimizers):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.driver.end({
            "unit": "on_train_epoch_end" if self.driver.unit == "epoch" else "on_before_optimizer_step",
            "penalty": "on_before_optimizer_step",
        })  # fmt: skip

    def _take_loss(self) -> float | None:
        mean = float(self._loss_sum) / self._loss_count if self._loss_count else None
        self._loss_sum, self._loss_count = 0.0, 0
        return mean

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The LC state, saved in the trainer's checkpoint under this callback's key."""
        return self.driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the LC state from the trainer's checkpoint (``fit(..., ckpt_path=...)``)."""
        self.driver.load_state_dict(state_dict)
