"""A Hugging Face ``TrainerCallback`` that runs the LC algorithm inside ``trainer.train()``.

::

    from transformers import Trainer, TrainingArguments
    from lcdsl.integrations.hf import LCCallback

    engine = lcdsl.Engine(model, lcdsl.load("my.lc").bind(model))
    lc = LCCallback(engine)                      # L steps of settings.first_epochs / epochs epochs
    args = TrainingArguments("out", num_train_epochs=lc.total_epochs, save_strategy="epoch")
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[lc]).train()

The loss stays as the model computes it: the callback adds the penalty's gradient in
``on_pre_optimizer_step`` (after the DDP all-reduce and after gradient clipping), runs the C and
multiplier steps at the end of each L step (``on_epoch_end``, or ``on_step_end`` with
``unit="step"``), sets the next μ, stops training when the schedule is done, and writes its state
beside every checkpoint (``checkpoint-N/lcdsl_state.pt``, on the main process), from where
``trainer.train(resume_from_checkpoint=...)`` reads it back. Needs ``transformers`` and
``accelerate``: ``pip install 'lcdsl[hf]'``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from lcdsl.engine.driver import DriverCallback

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    if exc.name != "transformers":
        raise
    raise ModuleNotFoundError(
        "lcdsl.integrations.hf needs transformers: pip install 'lcdsl[hf]'", name="transformers"
    ) from None

__all__ = ["STATE_FILE", "LCCallback"]

STATE_FILE = "lcdsl_state.pt"
"""The file the callback writes into each ``checkpoint-N`` folder."""

_CHECKPOINT_PREFIX = "checkpoint"  # the Trainer's own folder name: checkpoint-{global_step}


def _last_loss(state: TrainerState) -> float | None:
    """The most recent training loss the Trainer logged."""
    for entry in reversed(state.log_history):
        if "loss" in entry:
            return float(entry["loss"])
    return None


class LCCallback(DriverCallback, TrainerCallback):
    """Runs the LC algorithm's schedule in a Hugging Face ``Trainer``.

    Args:
        engine: built on the model given to the ``Trainer``.
        unit: an L step lasts ``length`` epochs (``"epoch"``) or optimizer steps (``"step"``).
        length: units per L step; None takes the spec's ``epochs`` (``first_epochs`` for the first).
        first_length: units of the first L step; None: as ``length``, or the spec's ``first_epochs``.
        evaluate: metrics of the compressed model after each C step (under ``engine.compressed()``).
        finalize: ``w ← Δ(θ)`` at the end of training once the schedule is done.
        reset_optimizer: clear the optimizer's state at the start of each L step.

    Raises:
        EngineError: at train start, if the engine's parameters are not the Trainer's model's.
    """


    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore the LC state from a file this callback wrote (``checkpoint-N/lcdsl_state.pt``)."""
        self.driver.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    # --------------------------------------------------------------------- hooks

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is not None:
            self.driver.check_model(model)
        if state.global_step > 0:  # resume_from_checkpoint: the Trainer has loaded its state
            path = os.path.join(args.output_dir, f"{_CHECKPOINT_PREFIX}-{state.global_step}", STATE_FILE)
            if os.path.isfile(path):
                self.load(path)
            elif not self.driver.begun:
                warnings.warn(
                    f"lcdsl: resuming at step {state.global_step} without an LC state ({path} is missing); "
                    "the LC schedule starts over",
                    stacklevel=2,
                )
        self.driver.begin(self._optimizers(kwargs))

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.driver.add_penalty_grad()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self.driver.unit == "step" and self.driver.unit_end(_last_loss(state), self._optimizers(kwargs)):
            control.should_training_stop = True
        return control

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        # the Trainer also ends an epoch when it stops early (max_steps); only whole epochs count
        whole = state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6
        if (
            self.driver.unit == "epoch"
            and whole
            and self.driver.unit_end(_last_loss(state), self._optimizers(kwargs))
        ):
            control.should_training_stop = True
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{_CHECKPOINT_PREFIX}-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.driver.state_dict(), os.path.join(folder, STATE_FILE))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.driver.end({
            "unit": "on_epoch_end" if self.driver.unit == "epoch" else "on_step_end",
            "penalty": "on_pre_optimizer_step",
        })  # fmt: skip

    @staticmethod
    def _optimizers(kwargs: dict[str, Any]) -> list[torch.optim.Optimizer]:
        optimizer = kwargs.get("optimizer")
        return [optimizer] if optimizer is not None else []
