"""A rule's ``within …`` made into a plan :class:`~lcdsl.plan.model.Budget`: its limit in absolute
units and the cost of every option of every task, measured as ``lcdsl check`` measures them
(:func:`lcdsl.budget.costs.option_cost`).

FLOPs are multiply-adds of one forward example; a convolution's weight is used once per output
position, so a flops budget over a convolution needs those positions, found by running one
example input through the model (:func:`output_positions`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from lcdsl.budget.costs import dense_cost, option_cost
from lcdsl.errors import Diagnostics
from lcdsl.language.spec import Rule
from lcdsl.operators.choice import Choice
from lcdsl.plan.model import Budget, Task
from lcdsl.plan.selectors import ModelIndex

__all__ = ["needs_positions", "output_positions", "make_budget", "amount_text"]


def needs_positions(task: Task) -> bool:
    """Whether a task's flops depend on output positions: a weight of more than two axes (a conv)."""
    return any(len(shape) > 2 for shape in task.shapes)


def output_positions(
    model: torch.nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor], names: Sequence[str], index: ModelIndex
) -> dict[str, int]:
    """Output positions per example of the module owning each parameter of ``names``: the product
    of its output's axes after (batch, channels), 1 for a 2-D output.

    ``example_input`` is one batch (or a tuple of the forward's arguments); the model runs once
    under ``no_grad``, in eval mode, and is put back in the mode it was in."""
    modules = {name: index.owner(name)[0] for name in names}
    seen: dict[int, int] = {}

    def hook(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 1:
            seen[id(module)] = math.prod(output.shape[2:]) if output.dim() > 2 else 1

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in modules.values()}.values()]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
            model(*args)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return {name: seen.get(id(module), 1) for name, module in modules.items()}


_BYTES = ((8 * 1000**3, "GB"), (8 * 1000**2, "MB"), (8 * 1000, "kB"))
_COUNTS = ((1000**3, "G"), (1000**2, "M"), (1000, "k"))


def amount_text(value: float, unit: str) -> str:
    """A size as a person reads it: ``3.2 kB``, ``20,000 params``, ``1.5 Mflops``."""
    if unit == "bits":
        for scale, name in _BYTES:
            if value >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value / 8:.4g} B"
    if unit == "flops":
        for scale, prefix in _COUNTS:
            if value >= scale:
                return f"{value / scale:.3g} {prefix}flops"
        return f"{int(value):,} flops"
    return f"{int(value):,} {unit}"


def make_budget(
    rule: Rule, tasks: Sequence[Task], positions: Mapping[str, int], diags: Diagnostics
) -> Budget | None:
    """The plan budget of ``rule`` over its ``tasks`` (each with a :class:`Choice` operator), or
    None with located errors: an option that cannot be measured in the unit (``unmeasurable``),
    a limit below the cheapest options (``budget-too-small``)."""
    within = rule.budget
    unit = within.unit
    where = within.span if within.span is not None else rule.span
    costs: list[tuple[int, ...]] = []
    dense = 0
    for task in tasks:
        shape = task.view_shape
        task_positions = max((positions.get(n, 1) for n in task.parameters), default=1)
        dense += dense_cost(shape, unit, task_positions)
        options = task.operator.options if isinstance(task.operator, Choice) else (task.operator,)
        row = []
        for label, option in zip(getattr(task.operator, "labels", ("",)), options):
            try:
                row.append(option_cost(option, shape, unit, task_positions))
            except ValueError as exc:
                diags.add("unmeasurable", f"{task.name} ({label}) cannot be measured in {unit}: {exc}", where)
                return None
        costs.append(tuple(row))
    limit = math.floor(within.amount * dense) if within.relative else math.floor(within.amount)
    cheapest = sum(min(row) for row in costs)
    if cheapest > limit:
        written = f"within {within.text}" if within.text else f"within {amount_text(limit, unit)}"
        shown = f" ({amount_text(limit, unit)})" if within.relative else ""
        diags.add(
            "budget-too-small",
            f"{written}{shown}: the cheapest choices take {amount_text(cheapest, unit)}",
            where,
            hint="raise the budget, or offer cheaper choices (a lower end of the range)",
        )
        return None
    text = f"within {within.text}" if within.text else ""
    return Budget(tuple(t.name for t in tasks), limit, unit, tuple(costs), rule=rule, text=text)
