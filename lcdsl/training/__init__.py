"""Training: the built-in models and data sets, the reference model, and the L step of ``compress``.

- :mod:`.zoo`: built-in models (``lenet300``, ``lenet5``) and ``module:function`` factories;
- :mod:`.data`: built-in data sets (``digits``, ``fashion-mnist``, ``mnist``) and factories
  (tensors, torch datasets and data loaders);
- :mod:`.batch`: one batch through a model (tensor, tuple or dict batches; the loss);
- :mod:`.epochs`: seeded mini-batches, the optimizer, lr schedules, epochs of training, evaluation;
- :mod:`.reference`: the reference recipe;
- :mod:`.lstep`: the L step :meth:`lcdsl.engine.Engine.run` calls.
"""

from lcdsl.training.epochs import Batches, LrSchedule, error_rate, evaluate, make_optimizer, train_epochs
from lcdsl.training.lstep import LStep, make_l_step
from lcdsl.training.reference import Recipe, default_recipe, train_reference

__all__ = [
    "Recipe", "default_recipe", "Batches", "make_optimizer", "train_epochs", "train_reference", "LStep",
    "make_l_step", "error_rate", "evaluate", "LrSchedule",
]  # fmt: skip
