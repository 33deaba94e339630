"""The plan: a spec bound to a model. Which tensors form which task, under which operator.

:func:`lcdsl.plan.binder` makes one from a spec and a model.
"""

from __future__ import annotations

import math

import attrs

from lcdsl.language.spec import Rule, Spec
from lcdsl.operators.base import Operator, Storage
from lcdsl.operators.layout import Layout
from lcdsl.operators.view import View, split_view
from lcdsl.plan.names import task_name
from lcdsl.plan.settings import Settings

__all__ = ["Task", "Plan", "split_view"]



@attrs.frozen
class Task:
    """One C-step problem: some tensors, seen together, under one operator."""

    parameters: tuple[str, ...] = attrs.field(converter=tuple)
    """Full parameter names (without a DDP ``module.`` prefix), in model order."""
    shapes: tuple[tuple[int, ...], ...] = attrs.field(converter=lambda s: tuple(tuple(x) for x in s))
    """The shape of each parameter."""
    operator: Operator
    """The operator, with amounts resolved to absolute numbers."""
    joint: bool = False
    """Whether the task came from a ``[ … ]`` group (one codebook / budget for all)."""
    rule: Rule | None = attrs.field(default=None, eq=False, repr=False)
    """The rule the task came from, for messages."""
    layout: Layout | None = None
    """Which axes of the tensor are the layer's outputs and inputs, for a ``"matrix"`` or
    ``"tensor"`` operator (the binder finds it from the parameter's module); None when the
    storage order is already ``(out, in, kernel…)`` (PyTorch's), or for a vector operator."""

    @property
    def name(self) -> str:
        """``fc1.weight``, or ``[fc1.weight, fc2.weight]`` for a joint task."""
        return task_name(self.parameters, self.joint)

    @property
    def numel(self) -> int:
        """Number of weights in the task."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def view(self) -> View:
        """The task's tensors as its operator sees them (:class:`~lcdsl.operators.View`).

        Raises ``ValueError`` when the operator's view cannot take the task's shapes."""
        return View.of(self.operator, self.shapes, self.layout)

    @property
    def view_shape(self) -> tuple[int, ...]:
        """The shape the operator sees: ``self.view.shape``."""
        return self.view.shape

    def predicted_storage(self) -> Storage | None:
        """The operator's size for this task before training, if it can tell."""
        return self.operator.storage(self.view_shape)

    def axes(self) -> str | None:
        """What the operator does along the layer's axes (``keeps 64 of 256 output units``), for
        ``lcdsl check``; None for an element-wise operator."""
        return self.operator.axes(self.view_shape)


@attrs.frozen
class Plan:
    """A spec bound to a model: the tasks, the parameters left dense, and the settings."""

    tasks: tuple[Task, ...] = attrs.field(converter=tuple)
    """Every task, in rule order then model order."""
    dense: tuple[str, ...] = attrs.field(converter=tuple)
    """Parameters no rule claims; they stay 32-bit dense."""
    dense_numel: int = 0
    """How many numbers the dense parameters hold."""
    buffers: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """The model's buffers that its ``state_dict`` keeps (BatchNorm's running statistics, …):
    every saved model stores them as they are."""
    buffer_numel: int = 0
    """How many numbers the buffers hold."""
    buffer_bits: int = 0
    """Their size at their own dtype's bits (float32 statistics at 32, an int64 counter at 64),
    as every file stores them; part of a plan's total size."""
    settings: Settings = attrs.field(factory=Settings)
    """The run settings."""
    spec: Spec | None = attrs.field(default=None, eq=False, repr=False)
    """The spec this plan was bound from."""
