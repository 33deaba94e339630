"""The L step ``lcdsl compress`` runs: epochs of cross-entropy with the penalty's gradient added.

It follows the spec's settings: a fresh optimizer each LC step (the penalty changes with μ; old
momentum would push ``w`` away from the new ``Δ(θ)``), ``lr · lr_decay^k`` at LC step ``k``,
``first_epochs`` for the first L step and ``epochs`` after, on cross-entropy with the penalty's
gradient added in place (``engine.add_penalty_grad()`` after each backward pass: the same gradient
as adding ``engine.penalty()`` to the loss, at a fraction of the cost).

``lr_schedule`` shapes the learning rate within each L step (``constant``; ``cosine`` from the
step's lr to 0; ``step``: × ``lr_step_factor`` every ``lr_step_epochs`` epochs). ``weight_decay``
applies to the parameters the plan leaves dense, not to the compressed ones: the penalty already
pulls those to ``Δ(θ)``, and decay would pull them to 0 instead, away from the compressed model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from lcdsl.plan.settings import Settings
from lcdsl.training.batch import LossFn
from lcdsl.training.data import Data
from lcdsl.training.epochs import Batches, LrSchedule, make_optimizer, train_epochs

if TYPE_CHECKING:
    from lcdsl.engine.core import Engine

__all__ = ["LStep", "make_l_step"]


class LStep:
    """The L step :meth:`Engine.run` calls: ``lstep(engine, k)`` trains on loss + penalty
    (the penalty's gradient added in place, :meth:`Engine.add_penalty_grad`).

    Its state (the data generator's) goes into checkpoints via :meth:`state_dict`.
    """

    def __init__(self, model: nn.Module, data: Data, settings: Settings, loss_fn: LossFn | None = None) -> None:
        self.model = model
        self.data = data
        self.settings = settings
        self.loss_fn = loss_fn
        self.batches = Batches(settings.batch_size, settings.seed)
        self.schedule = LrSchedule(settings.lr_schedule, every=settings.lr_step_epochs, factor=settings.lr_step_factor)

    def lr(self, k: int) -> float:
        """The learning rate of LC step ``k`` (0-based): ``lr · lr_decay^k``."""
        return self.settings.lr * self.settings.lr_decay**k

    def epochs(self, k: int) -> int:
        """Epochs of LC step ``k``: ``first_epochs`` for the first, ``epochs`` after."""
        return self.settings.first_epochs if k == 0 else self.settings.epochs

    def __call__(self, engine: Engine, k: int) -> float:
        """Train one L step; returns the last epoch's mean loss (penalty excluded)."""
        s = self.settings
        no_decay = engine.parameters if s.weight_decay > 0 else ()
        optimizer = make_optimizer(
            self.model, s.optimizer, self.lr(k), s.momentum, s.nesterov, weight_decay=s.weight_decay, no_decay=no_decay
        )
        return train_epochs(
            self.model, optimizer, self.data, self.batches, self.epochs(k),
            add_penalty_grad=engine.add_penalty_grad, description=f"L step {k + 1}/{engine.max_steps}",
            loss_fn=self.loss_fn, schedule=self.schedule,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue with the same batches."""
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.batches.load_state_dict(state["batches"])


def make_l_step(model: nn.Module, data: Data, settings: Settings, loss_fn: LossFn | None = None) -> LStep:
    """The callable :meth:`lcdsl.engine.Engine.run` wants, for ``model`` on ``data``."""
    return LStep(model, data, settings, loss_fn)
