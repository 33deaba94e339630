"""The L step ``lcdsl compress`` runs: epochs of cross-entropy with the penalty's gradient added.

It follows the spec's settings: a fresh optimizer each LC step (the penalty changes with μ; old
momentum would push ``w`` away from the new ``Δ(θ)``), ``lr · lr_decay^k`` at LC step ``k``,
``first_epochs`` for the first L step and ``epochs`` after, on cross-entropy with the penalty's
gradient added in place (``engine.add_penalty_grad()`` after each backward pass: the same gradient
as adding ``engine.penalty()`` to the loss, at a fraction of the cost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from lcdsl.plan.settings import Settings
from lcdsl.training.data import Dataset
from lcdsl.training.epochs import Batches, make_optimizer, train_epochs

if TYPE_CHECKING:
    from lcdsl.engine.core import Engine

__all__ = ["LStep", "make_l_step"]


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
