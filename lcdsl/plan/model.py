"""The plan: a spec bound to a model. Which tensors form which task, under which operator.

:func:`lcdsl.plan.binder` makes one from a spec and a model.
"""

from __future__ import annotations

import math

import attrs

from lcdsl.errors import Diagnostic, render_diagnostic
from lcdsl.language.spec import Rule, Spec
from lcdsl.operators.base import Operator, Storage, describe
from lcdsl.operators.layout import Layout
from lcdsl.operators.view import View, split_view
from lcdsl.plan.names import task_name
from lcdsl.plan.settings import Settings

__all__ = ["Task", "Budget", "Plan", "split_view", "BUDGET_UNITS"]

BUDGET_UNITS = ("bits", "params", "flops")
"""What a :class:`Budget` counts: storage bits, stored numbers, or multiply-adds of one forward
example."""

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
    label: str | None = None
    """The name given to its joint group with ``as`` (``[fc*] as body``), or None."""

    @property
    def name(self) -> str:
        """The task's name everywhere (check, report.json, checkpoints, ``.lcz``): the group's
        given name, else ``fc1.weight``, ``[fc1.weight, fc2.weight]`` or, for a joint task of
        many tensors, ``[first, …, last] (N tensors)`` (:func:`~lcdsl.plan.names.task_name`)."""
        return task_name(self.parameters, self.joint, self.label)

    def __repr__(self) -> str:
        shapes = ", ".join("×".join(map(str, s)) for s in self.shapes[:3]) + (", …" if len(self.shapes) > 3 else "")
        try:
            operator = describe(self.operator)
        except Exception:  # an operator built in code that a spec cannot spell
            operator = repr(self.operator)
        line = f", line {self.rule.span.line}" if self.rule is not None and self.rule.span is not None else ""
        return f"Task({self.name}: {shapes} → {operator}{line})"

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


def _to_costs(value: object) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(c) for c in row) for row in value)  # type: ignore[union-attr]


def _check_costs(instance: Budget, attribute: object, costs: tuple[tuple[int, ...], ...]) -> None:
    if len(costs) != len(instance.tasks):
        raise ValueError(f"a budget needs one row of costs per task: {len(instance.tasks)} tasks, {len(costs)} rows")
    for name, row in zip(instance.tasks, costs):
        if not row:
            raise ValueError(f"task {name} of a budget has no option to choose from")
        if any(c < 0 for c in row):
            raise ValueError(f"task {name} of a budget has a negative cost")


@attrs.frozen
class Budget:
    """One ``within …`` of a rule: the options its tasks choose must cost at most ``limit``.

    Each task of :attr:`tasks` has a :class:`~lcdsl.operators.choice.Choice` operator; the C step
    picks one option per task minimising the summed distortion with ``Σ cost ≤ limit``."""

    tasks: tuple[str, ...] = attrs.field(converter=tuple)
    """``Task.name`` of every task the budget spans, in plan order."""
    limit: int = attrs.field(converter=int)
    """The most the chosen options may cost together, in :attr:`unit`; absolute."""
    unit: str = attrs.field(validator=attrs.validators.in_(BUDGET_UNITS))
    """``"bits"``, ``"params"`` or ``"flops"``."""
    costs: tuple[tuple[int, ...], ...] = attrs.field(converter=_to_costs, validator=_check_costs)
    """Per task, the cost of each of its Choice's options, in :attr:`unit` (computed when the plan
    is made, :func:`lcdsl.budget.costs.option_cost`, so the engine needs no model probe)."""
    rule: Rule | None = attrs.field(default=None, eq=False, repr=False)
    """The rule the budget came from, for messages."""
    text: str = ""
    """The ``within …`` as written (``within 40kB``), for messages and the report."""

    def __attrs_post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"a budget's limit is at least 0, got {self.limit}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("a budget names one task twice")

    @property
    def shown(self) -> str:
        """The budget as messages name it: its text, else ``within LIMIT UNIT``."""
        return self.text or f"within {self.limit} {self.unit}"


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
    ties: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(
        default=(), eq=False, converter=lambda t: tuple((n, tuple(a)) for n, a in t)
    )
    """Tied parameters of the model: (canonical name, its other names), e.g.
    ``("transformer.wte.weight", ("lm_head.weight",))``. Tasks use the canonical name."""
    warnings: tuple[Diagnostic, ...] = attrs.field(default=(), eq=False, converter=tuple)
    """What binding found that may not be meant, as diagnostics of severity ``"warning"`` with a
    code and a span (``norm-parameters``: a wildcard claims BatchNorm/LayerNorm γ and β). The plan
    is made anyway; ``lcdsl check`` and ``lcdsl compress`` print them (:meth:`render_warnings`)."""
    budgets: tuple[Budget, ...] = attrs.field(default=(), converter=tuple)
    """The rules' ``within …`` budgets, each over tasks whose operator is a
    :class:`~lcdsl.operators.choice.Choice`; a task is in at most one budget."""

    def tied(self, name: str) -> tuple[str, ...]:
        """The other names of a parameter's tensor (``("lm_head.weight",)``), or ``()``."""
        return dict(self.ties).get(name, ())

    def render_warnings(self, color: bool = False) -> str:
        """The warnings as a compiler prints them (``file:line:col: warning: …``, line, carets, hint)."""
        source = self.spec.source if self.spec is not None else ""
        filename = self.spec.filename if self.spec is not None else "<spec>"
        return "\n".join(render_diagnostic(w, source, filename, color=color) for w in self.warnings)

    def __repr__(self) -> str:
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'s' if n != 1 else ''}"

        head = f"Plan({count(len(self.tasks), 'task')}, {count(len(self.dense), 'dense parameter')}"
        head += f" ({self.dense_numel:,} weights), {count(len(self.warnings), 'warning')})"
        return "\n".join([head + (":" if self.tasks else ""), *(f"  {task!r}" for task in self.tasks)])
